/* An upstream transport that forgot `send`: refused with the operation named. */
#include "gatehouse_plugin.h"

static gh_status create(const gh_host_api *h, void *c, uint32_t r, gh_bytes j, void **o, gh_error *e) {
    (void)h; (void)c; (void)r; (void)j; (void)o; (void)e;
    return GH_ERR_INTERNAL;
}
static gh_status start(void *i, gh_error *e) { (void)i; (void)e; return GH_OK; }
static void stop(void *i, uint32_t d) { (void)i; (void)d; }
static void destroy(void *i) { (void)i; }
static gh_status open_identity(void *i, gh_bytes d) { (void)i; (void)d; return GH_OK; }
static void command_result(void *i, uint64_t t, int32_t s, gh_bytes b) { (void)i; (void)t; (void)s; (void)b; }

static const gh_plugin_descriptor descriptor = {
    .abi_version = GH_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(gh_plugin_descriptor),
    .name = "incomplete",
    .version = "0.0.1",
    .kind = GH_KIND_TRANSPORT,
    .roles = GH_ROLE_UPSTREAM,
    .ops = {.create = create, .start = start, .stop = stop, .destroy = destroy,
            .open_identity = open_identity, .close_identity = open_identity,
            .command_result = command_result},
};

const gh_plugin_descriptor *gatehouse_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version;
    return &descriptor;
}
