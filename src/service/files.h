/* GET /v1/agent/files: a template rendered for one agent (doc/protocol.md), implemented by ns_svc_files
 * (service.h). The pieces that need no state are here. */
#ifndef NS_SERVICE_FILES_H
#define NS_SERVICE_FILES_H

#include <stdbool.h>

/* Does an If-None-Match header value (a list of quoted entity tags, or "*") match etag (quoted)? */
bool ns_files_etag_match(const char *header, const char *etag);

#endif
