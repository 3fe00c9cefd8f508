#include "ns-build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mini-http.h"

struct mini_server {
    int lfd;
    int port;
    char url[64];
    const mini_resp *script;
    size_t n_script;
    pthread_t th;
    pthread_mutex_t lock;
    volatile int stop;
    mini_req reqs[MINI_MAX_REQS];
    size_t nreq;  /* recorded */
    size_t nseen; /* answered or hung up on (indexes the script) */
    unsigned conns;
};

static void die(const char *what)
{
    fprintf(stderr, "mini-http: %s: %s\n", what, strerror(errno));
    abort();
}

/* Read until "\r\n\r\n" plus Content-Length bytes. 1 ok, 0 peer closed or stopping. */
static int read_request(mini_server *s, int fd, char *buf, size_t size, size_t *hdr_end, size_t *total)
{
    size_t have = 0, need = 0;
    char *end = NULL;

    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t k;
        if (s->stop)
            return 0;
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        k = read(fd, buf + have, size - 1 - have);
        if (k <= 0)
            return 0;
        have += (size_t)k;
        buf[have] = '\0';
        if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            *hdr_end = (size_t)(end - buf) + 4;
            need = *hdr_end + (cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (end != NULL && have >= need) {
            *total = need;
            return 1;
        }
        if (have == size - 1)
            return 0;
    }
}

static void serve_conn(mini_server *s, int fd, unsigned conn)
{
    static char buf[32768];

    for (;;) {
        size_t hdr_end = 0, total = 0, idx;
        mini_req *rq = NULL;
        mini_resp resp = {500, NULL, "script exhausted", 0, false};
        char head[4096];
        const char *line_end;
        int n;

        if (!read_request(s, fd, buf, sizeof(buf), &hdr_end, &total))
            return;
        pthread_mutex_lock(&s->lock);
        idx = s->nseen++;
        if (s->nreq < MINI_MAX_REQS)
            rq = &s->reqs[s->nreq++];
        if (idx < s->n_script)
            resp = s->script[idx];
        if (rq != NULL) {
            memset(rq, 0, sizeof(*rq));
            sscanf(buf, "%15s %1023s", rq->method, rq->target);
            line_end = strstr(buf, "\r\n");
            snprintf(rq->headers, sizeof(rq->headers), "%.*s", (int)(hdr_end - (size_t)(line_end - buf) - 2),
                     line_end + 2);
            rq->body_len = total - hdr_end < sizeof(rq->body) ? total - hdr_end : sizeof(rq->body);
            memcpy(rq->body, buf + hdr_end, rq->body_len);
            rq->conn = conn;
        }
        pthread_mutex_unlock(&s->lock);
        /* The delay in 10 ms steps, cut short by mini_stop: a test need not wait out a long one. */
        for (unsigned waited = 0; waited < resp.delay_ms && !s->stop; waited += 10) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (resp.hang_up)
            return;
        n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", resp.status,
                     resp.body ? strlen(resp.body) : 0, resp.headers ? resp.headers : "");
        if (send(fd, head, (size_t)n, MSG_NOSIGNAL) < 0)
            return;
        if (resp.body != NULL && strncmp(buf, "HEAD ", 5) != 0 &&
            send(fd, resp.body, strlen(resp.body), MSG_NOSIGNAL) < 0)
            return;
    }
}

static void *run(void *arg)
{
    mini_server *s = arg;

    while (!s->stop) {
        struct pollfd pfd = {s->lfd, POLLIN, 0};
        int fd;
        unsigned conn;
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        if ((fd = accept(s->lfd, NULL, NULL)) < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        conn = ++s->conns;
        pthread_mutex_unlock(&s->lock);
        serve_conn(s, fd, conn);
        close(fd);
    }
    return NULL;
}

mini_server *mini_start(const mini_resp *script, size_t n)
{
    mini_server *s = calloc(1, sizeof(*s));
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int one = 1;

    if (s == NULL)
        die("calloc");
    s->script = script;
    s->n_script = n;
    pthread_mutex_init(&s->lock, NULL);
    if ((s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        die("socket");
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->lfd, 16) != 0)
        die("bind/listen");
    if (getsockname(s->lfd, (struct sockaddr *)&a, &alen) != 0)
        die("getsockname");
    s->port = ntohs(a.sin_port);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
    if (pthread_create(&s->th, NULL, run, s) != 0)
        die("pthread_create");
    return s;
}

int mini_port(const mini_server *s)
{
    return s->port;
}

const char *mini_url(const mini_server *s)
{
    return s->url;
}

size_t mini_nreq(mini_server *s)
{
    size_t n;
    pthread_mutex_lock(&s->lock);
    n = s->nreq;
    pthread_mutex_unlock(&s->lock);
    return n;
}

const mini_req *mini_req_get(mini_server *s, size_t i)
{
    return i < mini_nreq(s) ? &s->reqs[i] : NULL;
}

unsigned mini_conns(mini_server *s)
{
    unsigned n;
    pthread_mutex_lock(&s->lock);
    n = s->conns;
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool mini_req_header(const mini_req *r, const char *name, char *out, size_t size)
{
    const char *p = r->headers;
    size_t nl = strlen(name);

    while (*p != '\0') {
        const char *e = strstr(p, "\r\n");
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        if (len > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, size, "%.*s", (int)(len - (size_t)(v - p)), v);
            return true;
        }
        if (e == NULL)
            break;
        p = e + 2;
    }
    return false;
}

void mini_stop(mini_server *s)
{
    if (s == NULL)
        return;
    s->stop = 1;
    pthread_join(s->th, NULL);
    close(s->lfd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
