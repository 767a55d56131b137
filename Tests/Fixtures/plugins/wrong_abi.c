/* A plugin built for a future ABI: the host must refuse it before calling anything of it. */
#include <stdlib.h>
#include "gatehouse_plugin.h"

static gh_status must_not_be_called(void) { abort(); }

static const gh_plugin_descriptor descriptor = {
    .abi_version = 99,
    .struct_size = sizeof(gh_plugin_descriptor),
    .name = "future",
    .version = "9.0.0",
    .kind = GH_KIND_TRANSPORT,
    .roles = GH_ROLE_UPSTREAM,
    .ops = {.create = (void *)must_not_be_called},
};

const gh_plugin_descriptor *gatehouse_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version;
    return &descriptor;
}
