// What qpid-proton itself allocates for the links of one device identity (issue #17's memory goal,
// docs/benchmarks.md "Upstream transports"). No gatehouse code: a client connection with one
// session opens N devices' links the way the `amqp` plugin does (telemetry sender, C2D receiver,
// and with methods a request receiver and a response sender carrying link properties), attached
// against an in-process proton peer, bytes moved by hand between two connection drivers.
//
//   Benchmarks/proton-link-cost.sh [DEVICES]
#include <malloc.h>
#include <proton/codec.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t heap_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

// The peer accepts every link, echoing the terminus as a hub does.
static void serve(pn_connection_driver_t *peer) {
    pn_event_t *event;
    while ((event = pn_connection_driver_next_event(peer))) {
        switch (pn_event_type(event)) {
        case PN_CONNECTION_REMOTE_OPEN: pn_connection_open(pn_event_connection(event)); break;
        case PN_SESSION_REMOTE_OPEN: pn_session_open(pn_event_session(event)); break;
        case PN_LINK_REMOTE_OPEN: {
            pn_link_t *link = pn_event_link(event);
            if (pn_link_state(link) & PN_LOCAL_UNINIT) {
                pn_terminus_copy(pn_link_source(link), pn_link_remote_source(link));
                pn_terminus_copy(pn_link_target(link), pn_link_remote_target(link));
                pn_link_open(link);
                if (pn_link_is_receiver(link)) pn_link_flow(link, 64);
            }
            break;
        }
        default: break;
        }
    }
}

static void pump(pn_connection_driver_t *client, pn_connection_driver_t *peer) {
    for (;;) {
        serve(peer);
        while (pn_connection_driver_next_event(client)) {}
        size_t moved = 0;
        pn_connection_driver_t *from[2] = {client, peer}, *to[2] = {peer, client};
        for (int side = 0; side < 2; side++) {
            pn_bytes_t out = pn_connection_driver_write_buffer(from[side]);
            if (out.size == 0) continue;
            pn_rwbytes_t in = pn_connection_driver_read_buffer(to[side]);
            size_t n = out.size < in.size ? out.size : in.size;
            memcpy(in.start, out.start, n);
            pn_connection_driver_read_done(to[side], n);
            pn_connection_driver_write_done(from[side], n);
            moved += n;
        }
        if (moved == 0) return;
    }
}

static pn_link_t *open_link(pn_session_t *session, int device, const char *role, int sender, int properties) {
    char name[160], address[160];
    snprintf(name, sizeof name, "%s-bench-%04d-0123456789abcdef", role, device);
    snprintf(address, sizeof address, "amqps://devhub.local/devices/bench-%04d/%s", device, role);
    pn_link_t *link = sender ? pn_sender(session, name) : pn_receiver(session, name);
    pn_terminus_set_address(sender ? pn_link_target(link) : pn_link_source(link), address);
    if (properties) {
        pn_data_t *data = pn_link_properties(link);
        pn_data_put_map(data);
        pn_data_enter(data);
        pn_data_put_symbol(data, pn_bytes(36, "com.microsoft:channel-correlation-id"));
        pn_data_put_string(data, pn_bytes(10, "bench-0001"));
        pn_data_exit(data);
    }
    pn_link_open(link);
    if (!sender) pn_link_flow(link, 64);
    return link;
}

// Heap bytes a device costs the client with `links` links (2: telemetry and C2D; 4: and methods).
static double per_device(int devices, int links) {
    pn_connection_driver_t client, peer;
    pn_connection_driver_init(&client, NULL, NULL);
    pn_connection_driver_init(&peer, NULL, NULL);
    pn_transport_set_server(peer.transport);
    pn_connection_open(client.connection);
    pn_session_t *session = pn_session(client.connection);
    pn_session_open(session);
    pump(&client, &peer);
    malloc_trim(0);
    size_t before = heap_in_use();
    for (int device = 0; device < devices; device++) {
        open_link(session, device, "messages/events", 1, 0);
        open_link(session, device, "messages/devicebound", 0, 0);
        if (links == 4) {
            open_link(session, device, "methods/devicebound-requests", 0, 1);
            open_link(session, device, "methods/devicebound-responses", 1, 1);
        }
        pump(&client, &peer);
    }
    // The peer's half is freed so that only the client's objects remain counted.
    pn_connection_driver_destroy(&peer);
    malloc_trim(0);
    double bytes = (double)(heap_in_use() - before) / devices;
    pn_connection_driver_destroy(&client);
    return bytes;
}

int main(int argc, char **argv) {
    int devices = argc > 1 ? atoi(argv[1]) : 1000;
    if (devices < 1) devices = 1000;
    // One link alone, before it is opened: what pn_sender allocates.
    pn_connection_driver_t lone;
    pn_connection_driver_init(&lone, NULL, NULL);
    pn_session_t *session = pn_session(lone.connection);
    size_t before = heap_in_use();
    pn_sender(session, "telemetry-bench-0000-0123456789abcdef");
    printf("pn_sender() alone: %zu bytes\n", heap_in_use() - before);
    pn_connection_driver_destroy(&lone);
    printf("qpid-proton heap a device, %d devices on one session, attached:\n", devices);
    printf("  2 links (telemetry, C2D):          %6.0f bytes\n", per_device(devices, 2));
    printf("  4 links (and the two method links): %6.0f bytes\n", per_device(devices, 4));
    return 0;
}
