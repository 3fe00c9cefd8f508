/* jansson set up for secrets: every JSON value and every string jansson allocates lives in the secure heap
 * (secmem.h) and is wiped when freed, since secret documents hold private keys. */
#ifndef NS_COMMON_JSON_H
#define NS_COMMON_JSON_H

#include <jansson.h>

/* Route jansson's allocations to the secure heap. Idempotent; call before the first jansson call. */
void ns_json_init(void);

/* Free a string returned by json_dumps() and friends (they come from the secure heap). NULL is accepted. */
void ns_json_free(void *p);

#endif
