/* A scripted HTTP/1.1 server on 127.0.0.1 in a thread of the test, for the unit tests of src/net.
 *
 * It serves one connection at a time (keep-alive), answers the i-th request with script[i] (500 once the
 * script runs out) and records every request: method, target, header block and body. Not a general
 * server: just enough for libcurl. */
#ifndef NS_TESTS_MINI_HTTP_H
#define NS_TESTS_MINI_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mini_resp {
    int status;
    const char *headers; /* extra header lines, each ending "\r\n", or NULL */
    const char *body;    /* NULL: empty */
    unsigned delay_ms;   /* wait this long before answering (cut short by mini_stop) */
    bool hang_up;        /* close the connection instead of answering */
} mini_resp;

#define MINI_MAX_REQS 64

typedef struct mini_req {
    char method[16];
    char target[1024];
    char headers[8192]; /* the raw header lines */
    char body[8192];
    size_t body_len;
    unsigned conn; /* 1-based number of the connection it came on */
} mini_req;

typedef struct mini_server mini_server;

/* Start serving script[0..n) (copied by reference: keep it alive). Aborts the test on failure. */
mini_server *mini_start(const mini_resp *script, size_t n);
int mini_port(const mini_server *s);
/* "http://127.0.0.1:PORT" */
const char *mini_url(const mini_server *s);
/* Requests received so far, and connections accepted. */
size_t mini_nreq(mini_server *s);
const mini_req *mini_req_get(mini_server *s, size_t i);
unsigned mini_conns(mini_server *s);
/* The value of header `name` (case-insensitive) of a recorded request into out, or false. */
bool mini_req_header(const mini_req *r, const char *name, char *out, size_t size);
void mini_stop(mini_server *s);

#endif
