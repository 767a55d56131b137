/* A transport plugin written in C against gatehouse_plugin.h alone: the proof that the ABI is
 * language-neutral. Role: upstream. Every send is "delivered" at once (or held, for tests) and,
 * if the config names a file, appended to it as one line "device<TAB>properties<TAB>payload".
 *
 * Config (JSON, matched by substring: this is a test fixture, not a JSON parser):
 *   "out": "/path/file"   append every sent message here
 *   "hold": true          do not acknowledge until loopback_ack_all() is called
 *
 * Test hooks (found with dlsym): loopback_sent_count, loopback_ack_all, loopback_set_link.
 * The plugin keeps global state: one instance at a time, which is all the tests need. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gatehouse_plugin.h"

typedef struct {
    const gh_host_api *host;
    void *host_ctx;
    char out[512];
    int hold;
} loopback;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static loopback *current;
static uint64_t held[65536];
static size_t held_count;
static uint64_t sent_count;

static gh_status lb_create(const gh_host_api *host, void *host_ctx, uint32_t role, gh_bytes config,
                           void **out_instance, gh_error *error) {
    if (role != GH_ROLE_UPSTREAM) {
        snprintf(error->message, sizeof error->message, "loopback only plays the upstream role");
        return GH_ERR_INVALID;
    }
    loopback *self = calloc(1, sizeof *self);
    self->host = host;
    self->host_ctx = host_ctx;
    char json[1024] = {0};
    size_t n = config.len < sizeof json - 1 ? (size_t)config.len : sizeof json - 1;
    memcpy(json, config.data, n);
    if (strstr(json, "\"bogus\"")) {
        snprintf(error->message, sizeof error->message, "unknown key `bogus`");
        snprintf(error->config_key, sizeof error->config_key, "bogus");
        free(self);
        return GH_ERR_INVALID;
    }
    const char *out = strstr(json, "\"out\"");
    if (out) {
        const char *colon = strchr(out + 5, ':');
        const char *start = colon ? strchr(colon, '"') : NULL;
        const char *end = start ? strchr(start + 1, '"') : NULL;
        if (start && end && (size_t)(end - start - 1) < sizeof self->out)
            memcpy(self->out, start + 1, (size_t)(end - start - 1));
    }
    self->hold = strstr(json, "\"hold\":true") != NULL || strstr(json, "\"hold\" : true") != NULL;
    pthread_mutex_lock(&lock);
    current = self;
    held_count = 0;
    sent_count = 0;
    pthread_mutex_unlock(&lock);
    *out_instance = self;
    return GH_OK;
}

static gh_status lb_start(void *instance, gh_error *error) {
    (void)instance; (void)error;
    return GH_OK;
}

static void lb_stop(void *instance, uint32_t drain_ms) {
    (void)drain_ms;
    loopback *self = instance;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < held_count; i++) self->host->delivered(self->host_ctx, held[i], GH_ERR_UNAVAILABLE);
    held_count = 0;
    pthread_mutex_unlock(&lock);
}

static void lb_destroy(void *instance) {
    pthread_mutex_lock(&lock);
    if (current == instance) current = NULL;
    pthread_mutex_unlock(&lock);
    free(instance);
}

static gh_status lb_open(void *instance, gh_bytes device) {
    loopback *self = instance;
    self->host->link_state(self->host_ctx, device, GH_LINK_UP, (gh_bytes){NULL, 0});
    return GH_OK;
}

static gh_status lb_close(void *instance, gh_bytes device) {
    loopback *self = instance;
    self->host->link_state(self->host_ctx, device, GH_LINK_DOWN, (gh_bytes){(const uint8_t *)"closed", 6});
    return GH_OK;
}

static gh_status lb_send(void *instance, const gh_message *message, uint64_t token) {
    loopback *self = instance;
    if (self->out[0]) {
        FILE *file = fopen(self->out, "a");
        if (file) {
            fwrite(message->device_id.data, 1, (size_t)message->device_id.len, file);
            fputc('\t', file);
            for (uint32_t i = 0; i < message->property_count; i++) {
                if (i) fputc('&', file);
                fwrite(message->properties[i].key.data, 1, (size_t)message->properties[i].key.len, file);
                fputc('=', file);
                fwrite(message->properties[i].value.data, 1, (size_t)message->properties[i].value.len, file);
            }
            fputc('\t', file);
            fwrite(message->payload.data, 1, (size_t)message->payload.len, file);
            fputc('\n', file);
            fclose(file);
        }
    }
    pthread_mutex_lock(&lock);
    sent_count++;
    int hold = self->hold && held_count < sizeof held / sizeof held[0];
    if (hold) held[held_count++] = token;
    pthread_mutex_unlock(&lock);
    if (!hold) self->host->delivered(self->host_ctx, token, GH_OK);
    return GH_OK;
}

static void lb_command_result(void *instance, uint64_t token, int32_t status, gh_bytes body) {
    (void)instance; (void)token; (void)status; (void)body;
}

static const gh_plugin_descriptor descriptor = {
    .abi_version = GH_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(gh_plugin_descriptor),
    .name = "loopback",
    .version = "1.0.0",
    .kind = GH_KIND_TRANSPORT,
    .roles = GH_ROLE_UPSTREAM,
    .ops = {
        .create = lb_create,
        .start = lb_start,
        .stop = lb_stop,
        .destroy = lb_destroy,
        .open_identity = lb_open,
        .close_identity = lb_close,
        .send = lb_send,
        .command_result = lb_command_result,
    },
};

const gh_plugin_descriptor *gatehouse_plugin_entry(uint32_t host_abi_version) {
    return host_abi_version == GH_PLUGIN_ABI_VERSION ? &descriptor : NULL;
}

/* ---- test hooks ---- */
uint64_t loopback_sent_count(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = sent_count;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Acknowledges every held send (GH_OK) or fails them (status != 0). */
void loopback_ack_all(int32_t status) {
    pthread_mutex_lock(&lock);
    loopback *self = current;
    size_t n = held_count;
    uint64_t tokens[65536];
    memcpy(tokens, held, n * sizeof tokens[0]);
    held_count = 0;
    pthread_mutex_unlock(&lock);
    for (size_t i = 0; self && i < n; i++) self->host->delivered(self->host_ctx, tokens[i], status);
}

void loopback_set_link(const char *device, int32_t state) {
    pthread_mutex_lock(&lock);
    loopback *self = current;
    pthread_mutex_unlock(&lock);
    if (self)
        self->host->link_state(self->host_ctx, (gh_bytes){(const uint8_t *)device, strlen(device)}, state,
                               (gh_bytes){NULL, 0});
}
