#!/usr/bin/env bash
# Covers: tests/integration/s3-cli.sh against Ceph RGW instead of s3rver (NS_S3_BACKEND=rgw): every CLI
# command on a real S3 implementation that checks signatures and conditional headers, plus a create over an
# existing secret (7), compare-and-swap races (one writer wins, the others conflict) and a wrong secret key
# (6, SignatureDoesNotMatch). Uses the shared cluster of contrib/test.sh, or starts its own.
NS_S3_BACKEND=rgw exec bash "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/s3-cli.sh"
