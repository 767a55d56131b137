/*
 * gatehouse_plugin.h — the gatehouse plugin ABI, version 1.
 *
 * A plugin is a shared object in the plugin directory (/usr/lib/gatehouse/plugins by default)
 * that exports one C symbol:
 *
 *     const gh_plugin_descriptor *gatehouse_plugin_entry(uint32_t host_abi_version);
 *
 * The handshake:
 *   1. The host dlopen()s the file and dlsym()s GH_PLUGIN_ENTRY_SYMBOL. A missing symbol refuses
 *      the file.
 *   2. The host calls the entry with the ABI version it speaks. The entry must do nothing else:
 *      no allocation, no threads, no I/O. It returns a pointer to a static descriptor (or NULL if
 *      it cannot serve that host version).
 *   3. The host checks descriptor->abi_version == GH_PLUGIN_ABI_VERSION and
 *      descriptor->struct_size >= sizeof(gh_plugin_descriptor) BEFORE it reads or calls anything
 *      else, then checks that every operation the declared kind and roles require is non-NULL.
 *      Any failure refuses the plugin with a message naming the file; nothing of it is called.
 *
 * Lifecycle is four calls: create (with the plugin's own config as JSON) -> start -> stop (drain)
 * -> destroy. The host calls them from one thread, in that order, never concurrently. A firewall
 * is stopped only when gatehoused stops; on reload the host starts a fresh instance and destroys
 * the replaced one without stop (its stop would undo the fresh instance's rules), and an
 * instance the CLI created for one control action is destroyed without start or stop.
 *
 * Principles:
 *   - Plugins never hold key material. A transport that needs a SAS token asks the host to sign
 *     (gh_host_api.sign_sas); the host signs with the TPM or with a key it keeps in memory.
 *   - Completion is explicit. gh_plugin_ops.send returns at once; the plugin reports the hub's
 *     acknowledgement (or a failure) later through gh_host_api.delivered with the same token.
 *   - Back-pressure is explicit. gh_host_api.ingest blocks until the messages are durable; a
 *     downstream transport acknowledges to its broker only after ingest returned GH_OK.
 *   - Poison messages never wedge anything. A message that can never be delivered is consumed,
 *     acknowledged and kept by the host as a dead letter: a downstream transport hands it to
 *     gh_host_api.dead_letter (and acknowledges it after GH_OK); an upstream transport refuses it
 *     in gh_plugin_ops.send (GH_ERR_INVALID) or reports it refused through
 *     gh_host_api.delivered (GH_ERR_REFUSED). A link that is down never makes a dead letter.
 *   - Threads are stated next to every function below.
 *
 * Types are fixed-width. Every struct that can grow has a struct_size or reserved fields; a
 * reader must accept a larger struct_size than it knows and ignore the tail.
 *
 * Data model: ABI v1 is defined for LP64 only (64-bit pointers and long, as on 64-bit Linux and
 * macOS); a build for any other data model stops with an #error. The end of this header asserts
 * the size of every struct and the offset of every field at compile time, so a plugin built
 * against it with a compiler that lays them out differently fails to build instead of loading.
 *
 * OWNERSHIP words used below:
 *   borrowed  — valid only for the duration of the call that passed it; copy what you keep.
 *   static    — valid for as long as the shared object stays loaded.
 *   caller    — the caller allocated it and frees it; the callee writes into it.
 */
#ifndef GATEHOUSE_PLUGIN_H
#define GATEHOUSE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#if !defined(__LP64__) && !defined(_LP64)
#error "gatehouse_plugin.h: the gatehouse plugin ABI v1 supports only the LP64 data model (64-bit pointers and long); this build is not LP64"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version. A change that moves or removes anything below bumps it; the host refuses a
 * plugin built against another version. Appending to reserved space does not bump it. */
#define GH_PLUGIN_ABI_VERSION 1u

/* The one symbol every plugin exports. */
#define GH_PLUGIN_ENTRY_SYMBOL "gatehouse_plugin_entry"

/* ---------------------------------------------------------------------------------------------
 * Status codes returned across the boundary.
 * ------------------------------------------------------------------------------------------- */
typedef int32_t gh_status;
#define GH_OK 0
#define GH_ERR_INVALID 1      /* bad argument or configuration */
#define GH_ERR_UNAVAILABLE 2  /* a peer or resource is not reachable now; retry later */
#define GH_ERR_REFUSED 3      /* a policy refused it (for example a key the host will not use) */
#define GH_ERR_NO_SPACE 4     /* a caller buffer was too small, or a queue is full */
#define GH_ERR_INTERNAL 5     /* anything else; the plugin or host logged the details */
#define GH_ERR_STOPPED 6      /* the host or plugin is shutting down */

/* Log levels for gh_host_api.log. */
#define GH_LOG_DEBUG 0
#define GH_LOG_INFO 1
#define GH_LOG_WARNING 2
#define GH_LOG_ERROR 3

/* Plugin kinds. */
#define GH_KIND_TRANSPORT 1u
#define GH_KIND_FIREWALL 2u

/* Transport roles (a bit mask in gh_plugin_descriptor.roles).
 *   DOWNSTREAM: reads leaf devices' telemetry from the site and hands it to gh_host_api.ingest.
 *   UPSTREAM:   sends messages to the hub under per-device identities (gh_plugin_ops.send) and
 *               hands cloud-to-device commands to gh_host_api.command. */
#define GH_ROLE_DOWNSTREAM 1u
#define GH_ROLE_UPSTREAM 2u

/* Link states for gh_host_api.link_state. */
#define GH_LINK_DOWN 0
#define GH_LINK_CONNECTING 1
#define GH_LINK_UP 2

/* Firewall control actions for gh_plugin_ops.control (kind GH_KIND_FIREWALL). The reply text:
 *   RENDER  the complete ruleset the plugin would apply, for review (no change to the host);
 *   CHECK   render, then a dry run through the packet filter; a one-line summary;
 *   APPLY   render, check, apply atomically, read back and compare; a one-line summary;
 *   STATUS  JSON: what is applied, whether it still matches what was applied, counters by reason;
 *   REMOVE  removes the plugin's ruleset (the host's own rules are untouched).
 * On failure the host's previous ruleset stays in place and gh_error names the rule or setting. */
#define GH_FIREWALL_RENDER 1u
#define GH_FIREWALL_CHECK 2u
#define GH_FIREWALL_APPLY 3u
#define GH_FIREWALL_STATUS 4u
#define GH_FIREWALL_REMOVE 5u

/* Command kinds for gh_command.kind. */
#define GH_COMMAND_C2D_MESSAGE 1
#define GH_COMMAND_DIRECT_METHOD 2

/* Reasons a downstream transport gives for a dead letter (gh_dead_letter.reason): short, stable
 * words the host stores as given and shows in `gatehouse dead-letters`. The host's own reasons
 * for messages the upstream transport refused are "hub-limit" (send returned GH_ERR_INVALID) and
 * "hub-refused" (delivered reported GH_ERR_REFUSED). */
#define GH_DEAD_LETTER_TOO_LARGE "too-large"  /* over the transport's size limit */
#define GH_DEAD_LETTER_NO_DEVICE "no-device"  /* its topic names no device */

/* The most payload bytes a dead letter carries to the host (gh_dead_letter.head): the host keeps
 * at most this many of a message it never had whole. */
#define GH_DEAD_LETTER_HEAD_MAX 4096u

/* ---------------------------------------------------------------------------------------------
 * Data that crosses the boundary.
 * ------------------------------------------------------------------------------------------- */

/* A byte string. OWNERSHIP: borrowed unless the function says otherwise. Not NUL-terminated. */
typedef struct gh_bytes {
    const uint8_t *data;
    uint64_t len;
} gh_bytes;

/* One application property of a message (IoT Hub property bag entry). OWNERSHIP: borrowed. */
typedef struct gh_property {
    gh_bytes key;
    gh_bytes value;
} gh_property;

/* A telemetry message of one leaf device.
 * OWNERSHIP: borrowed — the struct, the device id, the payload, the topic and the property array
 * are valid only during the call that passed them.
 * `topic` was added to ABI 1 in space that was reserved, so the struct's size (and the stride of
 * the array ingest takes) is unchanged: a plugin that predates it leaves it zero, which reads as
 * "no topic" (telemetry rules then see message.topic missing). */
typedef struct gh_message {
    uint32_t struct_size;           /* sizeof(gh_message) of the writer */
    uint32_t property_count;
    gh_bytes device_id;             /* UTF-8 */
    gh_bytes payload;
    const gh_property *properties;  /* property_count entries; NULL when 0 */
    int64_t created_unix_ms;        /* when the gateway first saw it; 0 if unknown */
    gh_bytes topic;                 /* UTF-8, where a downstream transport received it (the site
                                       broker's topic, property bag included); empty if unknown.
                                       The host does not pass it to send. */
    uint64_t flags;                 /* GH_MESSAGE_*; zero for telemetry. Only the host sets it, in
                                       send; it ignores it in ingest. */
    uint64_t reserved[1];           /* zero */
} gh_message;

/* gh_message.flags (taken from reserved space in ABI 1, like `topic`: a plugin that predates it
 * never sees it set, because the host sends flagged messages only to the gateway's own identity
 * and only through the plugins it ships).
 * GH_MESSAGE_TWIN_REPORTED: the payload is a JSON patch of `device_id`'s own reported properties
 * (IoT Hub: $iothub/twin/PATCH/properties/reported/), not telemetry; `delivered` reports the
 * hub's acknowledgement as for telemetry. A transport that cannot send it returns GH_ERR_INVALID. */
#define GH_MESSAGE_TWIN_REPORTED 1u

/* A cloud-to-device command as an upstream transport received it.
 * OWNERSHIP: borrowed, for the duration of gh_host_api.command. */
typedef struct gh_command {
    uint32_t struct_size;
    int32_t kind;                   /* GH_COMMAND_* */
    gh_bytes device_id;
    gh_bytes name;                  /* method name; for a C2D message empty */
    gh_bytes payload;
    const gh_property *properties;
    uint32_t property_count;
    uint32_t reserved0;
    uint64_t reserved[4];
} gh_command;

/* A message a downstream transport consumed but can never deliver, for gh_host_api.dead_letter.
 * OWNERSHIP: borrowed — the struct and every byte string in it are valid only during the call.
 * Never put a secret in `detail`, and never payload bytes anywhere but `head`. */
typedef struct gh_dead_letter {
    uint32_t struct_size;           /* sizeof(gh_dead_letter) of the writer */
    uint32_t reserved0;             /* zero */
    gh_bytes device_id;             /* UTF-8; empty when the topic names no device */
    gh_bytes topic;                 /* where it arrived (UTF-8), property bag included */
    gh_bytes reason;                /* a GH_DEAD_LETTER_* word */
    gh_bytes detail;                /* one line for people (limits, sizes), or empty */
    gh_bytes head;                  /* the payload's first bytes, at most GH_DEAD_LETTER_HEAD_MAX */
    uint64_t size;                  /* the payload's full size in bytes */
    int64_t received_unix_ms;       /* when the transport received it; 0: the host's now */
    uint64_t reserved[4];           /* zero */
} gh_dead_letter;

/* An error a plugin reports from create/start. OWNERSHIP: caller (the host) — the plugin writes
 * NUL-terminated UTF-8 into the arrays. Never put a secret in it. */
typedef struct gh_error {
    char message[512];
    char config_key[128];           /* the offending key of the plugin's config section, or "" */
} gh_error;

/* ---------------------------------------------------------------------------------------------
 * Host -> plugin: the functions the host offers. The host passes a pointer to this table and an
 * opaque host_ctx to create(); both stay valid until destroy() returns. The host fills every
 * function of the table.
 * ------------------------------------------------------------------------------------------- */
typedef struct gh_host_api {
    uint32_t abi_version;           /* GH_PLUGIN_ABI_VERSION */
    uint32_t struct_size;           /* sizeof(gh_host_api) of the host */

    /* Writes one log line under the plugin's name. THREADS: any. Never log a secret. */
    void (*log)(void *host_ctx, int32_t level, const char *message, uint64_t message_len);

    /* Hands `count` telemetry messages to the host. BLOCKS until all of them are durable in the
     * outbox (one transaction), then returns GH_OK; only then may the transport acknowledge them
     * to its broker. On any other status nothing of the batch is durable: do not acknowledge.
     * THREADS: any; calls from several threads are serialised by the host. */
    gh_status (*ingest)(void *host_ctx, const gh_message *messages, uint32_t count);

    /* Reports the outcome of gh_plugin_ops.send for `token`, exactly once per accepted send:
     * GH_OK once the hub acknowledged the message (MQTT PUBACK, AMQP accepted), possibly after
     * the plugin re-sent it on a new connection; GH_ERR_UNAVAILABLE when the plugin gave up on it
     * (identity closed, plugin stopping) — the host then sends it again later, in order;
     * GH_ERR_REFUSED when the hub keeps refusing this very message: the identity connects and
     * authenticates, and the hub drops the connection each time the message is sent, before it
     * acknowledged anything, a bounded number of times in a row (the plugin's setting) — the
     * host keeps it as a dead letter ("hub-refused") and never sends it again. A link that is
     * merely down never yields GH_ERR_REFUSED: the plugin keeps the message until the hub
     * acknowledges it or the identity is closed. THREADS: any; non-blocking. */
    void (*delivered)(void *host_ctx, uint64_t token, gh_status status);

    /* Reports that the upstream identity of `device_id` changed link state (GH_LINK_*).
     * `reason` is a short human text or empty (never a secret). While a link is down the host
     * sends nothing more to that identity; outstanding sends stay outstanding until delivered()
     * reports them. A downstream plugin reports its own connection to the site broker with an
     * empty `device_id` (the host's readiness and metrics read it; a downstream plugin that
     * never reports it is never "site link up"). THREADS: any; non-blocking. */
    void (*link_state)(void *host_ctx, gh_bytes device_id, int32_t state, gh_bytes reason);

    /* Signs an IoT Hub / DPS SAS token for `device_id`: the host computes
     * HMAC-SHA256(device key, resource "\n" expiry) and writes the complete
     * "SharedAccessSignature sr=...&sig=...&se=..." string, NUL-terminated, into `out`.
     * `resource` must name that device (it ends in "/devices/{device_id}"), else GH_ERR_REFUSED.
     * GH_ERR_NO_SPACE if `out_cap` is too small (256 bytes always suffice for ids under 128 bytes).
     * OWNERSHIP: out is caller's; the token is a secret: never log it. THREADS: any. */
    gh_status (*sign_sas)(void *host_ctx, gh_bytes device_id, gh_bytes resource,
                          int64_t expiry_unix_s, char *out, uint64_t out_cap,
                          uint64_t *out_len);

    /* Hands a cloud-to-device command to the host's gate. Returns at once; the host answers later
     * (possibly from another thread, possibly before this returns) with
     * gh_plugin_ops.command_result and the same `command_token`. THREADS: any. */
    void (*command)(void *host_ctx, const gh_command *command, uint64_t command_token);

    /* Reports the outcome of gh_plugin_ops.deliver for `command_token`, exactly once per
     * delivery the plugin accepted (returned GH_OK): for a C2D message 200 once the site broker
     * took it (or 503 when it could not); for a direct method the leaf device's own status and
     * JSON response, or 504 when it did not answer in time. `body` is borrowed.
     * THREADS: any; non-blocking. */
    void (*deliver_result)(void *host_ctx, uint64_t command_token, int32_t status, gh_bytes body);

    /* Hands the host a message the transport consumed but can never deliver (over its size
     * limit, no device in its topic): the host keeps it as a dead letter (device, topic, size,
     * reason, time and `head`, at most GH_DEAD_LETTER_HEAD_MAX bytes of the payload), counts it
     * and logs it (never its bytes). BLOCKS until the dead letter is durable, then returns GH_OK;
     * only then may the transport acknowledge the message to its broker, which then stops
     * redelivering it. On any other status nothing was kept: do not acknowledge.
     * For downstream transports: an upstream transport reports a message it can never send
     * through send (GH_ERR_INVALID) or delivered (GH_ERR_REFUSED) instead, and the host, which
     * holds the whole message, keeps it.
     * Added to ABI 1 in space that was reserved: a host that predates it leaves it NULL. Call it
     * only if struct_size >= offsetof(gh_host_api, dead_letter) + sizeof(void *) and it is not
     * NULL; without it the host cannot keep dead letters (log the drop, then acknowledge).
     * OWNERSHIP: `letter` is borrowed. THREADS: any; calls from several threads are serialised
     * by the host. */
    gh_status (*dead_letter)(void *host_ctx, const gh_dead_letter *letter);

    void *reserved[6];              /* NULL; future host functions */
} gh_host_api;

/* ---------------------------------------------------------------------------------------------
 * Plugin -> host: the plugin's operations, found through its descriptor.
 * ------------------------------------------------------------------------------------------- */
typedef struct gh_plugin_ops {
    /* Creates an instance that plays `role` (one GH_ROLE_* bit of the descriptor's roles; 0 for
     * other kinds). `config_json` is the plugin's own config section as a JSON object (UTF-8,
     * borrowed). On failure fill `error` and return non-GH_OK; nothing to destroy then.
     * REQUIRED. THREADS: host's control thread. */
    gh_status (*create)(const gh_host_api *host, void *host_ctx, uint32_t role,
                        gh_bytes config_json, void **out_instance, gh_error *error);

    /* Starts I/O (threads, connections). May return before connections are up; link_state
     * reports progress. REQUIRED. THREADS: control thread. */
    gh_status (*start)(void *instance, gh_error *error);

    /* Stops: stop reading new input, give in-flight work up to `drain_ms` to finish (reporting it
     * through delivered()), close connections, join threads. After stop returns the plugin calls
     * no host function. REQUIRED. THREADS: control thread. */
    void (*stop)(void *instance, uint32_t drain_ms);

    /* Frees the instance. REQUIRED. THREADS: control thread, after stop (a firewall instance may
     * be destroyed without stop: see the lifecycle at the top). */
    void (*destroy)(void *instance);

    /* UPSTREAM, REQUIRED for that role. Opens (or keeps open) the hub connection of one device
     * identity; progress through link_state. Idempotent. THREADS: any. */
    gh_status (*open_identity)(void *instance, gh_bytes device_id);

    /* UPSTREAM, REQUIRED for that role. Closes a device identity's connection. THREADS: any. */
    gh_status (*close_identity)(void *instance, gh_bytes device_id);

    /* UPSTREAM, REQUIRED for that role. Queues `message` for its device's identity and returns at
     * once (GH_OK), or refuses it now: GH_ERR_UNAVAILABLE when that identity is not connected
     * (the host tries again later), GH_ERR_INVALID when the message can never be sent by this
     * transport — it breaks a documented limit of the hub (its size with its properties, its
     * topic's length); the host then keeps it as a dead letter ("hub-limit") and goes on with
     * the device's next messages. Only an accepted send is later reported through
     * delivered(token). Messages of one device are sent in the order of these calls.
     * THREADS: any (the host calls from its dispatcher). */
    gh_status (*send)(void *instance, const gh_message *message, uint64_t token);

    /* UPSTREAM, REQUIRED for that role. The host's answer to gh_host_api.command: `status` is
     * the method status (200 allow-and-done, 403 denied, 404, 500, 504) and `body` a JSON
     * response (borrowed). For a C2D message the status family says how a transport whose
     * protocol settles C2D messages (AMQP) settles it: 2xx (delivered) → accepted; 4xx (the gate
     * refused it, and would again) → rejected, with the body's reason; anything else (5xx: the
     * site could not take it now) → released, so the hub offers it again. Over MQTT the PUBACK
     * already completed it and the transport can only log a refusal. THREADS: any. */
    void (*command_result)(void *instance, uint64_t command_token, int32_t status, gh_bytes body);

    /* DOWNSTREAM, OPTIONAL. Delivers a command the gate allowed to its leaf device on the site
     * side and returns at once: GH_OK (the outcome follows through gh_host_api.deliver_result
     * with the same token), or GH_ERR_UNAVAILABLE / GH_ERR_STOPPED when it cannot take it now
     * (no deliver_result follows). A downstream plugin without it (NULL) cannot take commands;
     * the host then answers every allowed command with 501. THREADS: any. */
    gh_status (*deliver)(void *instance, const gh_command *command, uint64_t command_token);

    /* FIREWALL, REQUIRED for that kind.
     * Runs one GH_FIREWALL_* action and hands its text to `reply` (borrowed, UTF-8, called at most
     * once, before control returns). On failure fill `error` (never a secret) and return
     * non-GH_OK; the packet filter is then as it was. start() applies; stop() (gatehoused stops,
     * never a reload) keeps the rules (fail closed) unless the plugin's config says otherwise.
     * THREADS: control thread. */
    gh_status (*control)(void *instance, uint32_t action, void (*reply)(void *reply_ctx, gh_bytes text),
                         void *reply_ctx, gh_error *error);

    void *reserved[7];              /* NULL */
} gh_plugin_ops;

/* The descriptor a plugin returns from its entry point. OWNERSHIP: static. */
typedef struct gh_plugin_descriptor {
    uint32_t abi_version;           /* GH_PLUGIN_ABI_VERSION the plugin was built against */
    uint32_t struct_size;           /* sizeof(gh_plugin_descriptor) */
    const char *name;               /* static; short, e.g. "mqtt" */
    const char *version;            /* static; the plugin's own version, e.g. "0.1.0" */
    uint32_t kind;                  /* GH_KIND_* */
    uint32_t roles;                 /* GH_ROLE_* bits (transports) */
    gh_plugin_ops ops;
    void *reserved[8];              /* NULL */
} gh_plugin_descriptor;

/* The entry point's type. */
typedef const gh_plugin_descriptor *(*gh_plugin_entry_fn)(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

/* ---------------------------------------------------------------------------------------------
 * The layout of ABI v1 (LP64), checked at compile time: the size of every struct and the offset
 * of every field. C11 _Static_assert, C++11 static_assert; GNU C before C11 through
 * __extension__; any other compiler skips the checks.
 * ------------------------------------------------------------------------------------------- */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define GH_ABI_ASSERT(condition, what) static_assert(condition, "gatehouse plugin ABI v1 layout: " what)
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define GH_ABI_ASSERT(condition, what) _Static_assert(condition, "gatehouse plugin ABI v1 layout: " what)
#elif !defined(__cplusplus) && defined(__GNUC__)
#define GH_ABI_ASSERT(condition, what) \
    __extension__ _Static_assert(condition, "gatehouse plugin ABI v1 layout: " what)
#endif

#ifdef GH_ABI_ASSERT
#define GH_ABI_SIZE(type, size) GH_ABI_ASSERT(sizeof(type) == (size), "sizeof(" #type ")")
#define GH_ABI_OFFSET(type, field, offset) \
    GH_ABI_ASSERT(offsetof(type, field) == (offset), "offsetof(" #type ", " #field ")")

GH_ABI_SIZE(gh_bytes, 16);
GH_ABI_OFFSET(gh_bytes, data, 0);
GH_ABI_OFFSET(gh_bytes, len, 8);

GH_ABI_SIZE(gh_property, 32);
GH_ABI_OFFSET(gh_property, key, 0);
GH_ABI_OFFSET(gh_property, value, 16);

GH_ABI_SIZE(gh_message, 88);
GH_ABI_OFFSET(gh_message, struct_size, 0);
GH_ABI_OFFSET(gh_message, property_count, 4);
GH_ABI_OFFSET(gh_message, device_id, 8);
GH_ABI_OFFSET(gh_message, payload, 24);
GH_ABI_OFFSET(gh_message, properties, 40);
GH_ABI_OFFSET(gh_message, created_unix_ms, 48);
GH_ABI_OFFSET(gh_message, topic, 56);
GH_ABI_OFFSET(gh_message, flags, 72);
GH_ABI_OFFSET(gh_message, reserved, 80);

GH_ABI_SIZE(gh_command, 104);
GH_ABI_OFFSET(gh_command, struct_size, 0);
GH_ABI_OFFSET(gh_command, kind, 4);
GH_ABI_OFFSET(gh_command, device_id, 8);
GH_ABI_OFFSET(gh_command, name, 24);
GH_ABI_OFFSET(gh_command, payload, 40);
GH_ABI_OFFSET(gh_command, properties, 56);
GH_ABI_OFFSET(gh_command, property_count, 64);
GH_ABI_OFFSET(gh_command, reserved0, 68);
GH_ABI_OFFSET(gh_command, reserved, 72);

GH_ABI_SIZE(gh_dead_letter, 136);
GH_ABI_OFFSET(gh_dead_letter, struct_size, 0);
GH_ABI_OFFSET(gh_dead_letter, reserved0, 4);
GH_ABI_OFFSET(gh_dead_letter, device_id, 8);
GH_ABI_OFFSET(gh_dead_letter, topic, 24);
GH_ABI_OFFSET(gh_dead_letter, reason, 40);
GH_ABI_OFFSET(gh_dead_letter, detail, 56);
GH_ABI_OFFSET(gh_dead_letter, head, 72);
GH_ABI_OFFSET(gh_dead_letter, size, 88);
GH_ABI_OFFSET(gh_dead_letter, received_unix_ms, 96);
GH_ABI_OFFSET(gh_dead_letter, reserved, 104);

GH_ABI_SIZE(gh_error, 640);
GH_ABI_OFFSET(gh_error, message, 0);
GH_ABI_OFFSET(gh_error, config_key, 512);

GH_ABI_SIZE(gh_host_api, 120);
GH_ABI_OFFSET(gh_host_api, abi_version, 0);
GH_ABI_OFFSET(gh_host_api, struct_size, 4);
GH_ABI_OFFSET(gh_host_api, log, 8);
GH_ABI_OFFSET(gh_host_api, ingest, 16);
GH_ABI_OFFSET(gh_host_api, delivered, 24);
GH_ABI_OFFSET(gh_host_api, link_state, 32);
GH_ABI_OFFSET(gh_host_api, sign_sas, 40);
GH_ABI_OFFSET(gh_host_api, command, 48);
GH_ABI_OFFSET(gh_host_api, deliver_result, 56);
GH_ABI_OFFSET(gh_host_api, dead_letter, 64);
GH_ABI_OFFSET(gh_host_api, reserved, 72);

GH_ABI_SIZE(gh_plugin_ops, 136);
GH_ABI_OFFSET(gh_plugin_ops, create, 0);
GH_ABI_OFFSET(gh_plugin_ops, start, 8);
GH_ABI_OFFSET(gh_plugin_ops, stop, 16);
GH_ABI_OFFSET(gh_plugin_ops, destroy, 24);
GH_ABI_OFFSET(gh_plugin_ops, open_identity, 32);
GH_ABI_OFFSET(gh_plugin_ops, close_identity, 40);
GH_ABI_OFFSET(gh_plugin_ops, send, 48);
GH_ABI_OFFSET(gh_plugin_ops, command_result, 56);
GH_ABI_OFFSET(gh_plugin_ops, deliver, 64);
GH_ABI_OFFSET(gh_plugin_ops, control, 72);
GH_ABI_OFFSET(gh_plugin_ops, reserved, 80);

GH_ABI_SIZE(gh_plugin_descriptor, 232);
GH_ABI_OFFSET(gh_plugin_descriptor, abi_version, 0);
GH_ABI_OFFSET(gh_plugin_descriptor, struct_size, 4);
GH_ABI_OFFSET(gh_plugin_descriptor, name, 8);
GH_ABI_OFFSET(gh_plugin_descriptor, version, 16);
GH_ABI_OFFSET(gh_plugin_descriptor, kind, 24);
GH_ABI_OFFSET(gh_plugin_descriptor, roles, 28);
GH_ABI_OFFSET(gh_plugin_descriptor, ops, 32);
GH_ABI_OFFSET(gh_plugin_descriptor, reserved, 168);

#undef GH_ABI_OFFSET
#undef GH_ABI_SIZE
#undef GH_ABI_ASSERT
#endif /* GH_ABI_ASSERT */

#endif /* GATEHOUSE_PLUGIN_H */
