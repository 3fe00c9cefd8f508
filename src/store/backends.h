/* The storage backends, one file each, listed in the static table in store.c.
 *
 * Only store.c includes this header: callers choose a backend by name through ns_store_open() and never
 * reach a backend's table directly. */
#ifndef NS_STORE_BACKENDS_H
#define NS_STORE_BACKENDS_H

#include "store/store.h"

/* `file`: one regular file per object under the folder storage.path (store_file.c). */
extern const ns_store_ops ns_store_file_ops;
/* `s3`: one object per name in an S3-compatible bucket, under storage.prefix (store_s3.c). */
extern const ns_store_ops ns_store_s3_ops;

#endif
