/* Whole reads and writes on a file descriptor, retried on EINTR and short counts. */
#ifndef NS_COMMON_FDIO_H
#define NS_COMMON_FDIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* Read fd to its end into a new buffer of at most `max` bytes (secret: in the secure heap, and the read
 * chunks are wiped). NS_E_TOO_LARGE past max, NS_E_NOMEM, or NS_E_STORAGE on a read error with errno
 * telling which; nothing is logged (the caller names the file). */
int ns_fd_read_all(int fd, size_t max, bool secret, ns_buf **out) NS_WUR;

/* Write all of p[0..n) to fd. 0, or -1 with errno set. */
int ns_fd_write_all(int fd, const uint8_t *p, size_t n) NS_WUR;

#endif
