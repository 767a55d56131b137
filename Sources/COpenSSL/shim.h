#ifndef GATEHOUSE_COPENSSL_SHIM_H
#define GATEHOUSE_COPENSSL_SHIM_H
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* One TLS client context for every hub connection of the process (libmosquitto would otherwise
 * build one per connection, loading the CA store each time): TLS 1.2 or later, the peer
 * verified against `cafile` (or the system's CAs when NULL) AND against `host` (a DNS name or an
 * IP address; every connection of the context goes to that one host), and
 * SSL_MODE_RELEASE_BUFFERS so an idle connection does not keep its ~34 KB of record buffers.
 * libmosquitto checks no host name on a context it did not build, so the check lives here.
 * Written in C because SSL_CTX_set_mode and SSL_CTX_set_min_proto_version are macros.
 * Returns NULL and a message in `error` on failure. */
static inline SSL_CTX *gh_tls_client_context(const char *cafile, const char *host, char *error, size_t error_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) goto fail;
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) goto fail;
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    unsigned char address[16];
    int is_ip = inet_pton(AF_INET, host, address) == 1 || inet_pton(AF_INET6, host, address) == 1;
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1 : X509_VERIFY_PARAM_set1_host(param, host, 0) != 1)
        goto fail;
    if (cafile) {
        if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) goto fail;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        goto fail;
    }
    return ctx;
fail:
    ERR_error_string_n(ERR_get_error(), error, error_len);
    if (ctx) SSL_CTX_free(ctx);
    return NULL;
}
#endif
