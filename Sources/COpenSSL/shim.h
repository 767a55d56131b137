#ifndef GATEHOUSE_COPENSSL_SHIM_H
#define GATEHOUSE_COPENSSL_SHIM_H
#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* One TLS client context for every hub connection of a transport (the `mqtt` transport's
 * links, the `amqp` transport's connections; see HubTLS's TLSSocket): TLS 1.2 or later, the peer
 * verified against `cafile` (or the system's CAs when NULL) AND against `host` (a DNS name or an
 * IP address; every connection of the context goes to that one host), and
 * SSL_MODE_RELEASE_BUFFERS so an idle connection does not keep its ~34 KB of record buffers.
 * Read-ahead is each connection's choice (a reader that takes it must read until WANT_READ).
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
/* RSA-OAEP encryption with SHA-256 for both the OAEP digest and MGF1, and a label: how a TPM
 * expects a seed encrypted to one of its RSA keys ("IDENTITY" for MakeCredential, "DUPLICATE"
 * for Import; TPM 2.0 Part 1, B.10.3). The key is the TPM public area's modulus and exponent.
 * swift-crypto's RSA takes no OAEP label, hence this. `out` needs the modulus size.
 * Returns 1 on success; 0 and a message in `error` otherwise. */
static inline int gh_rsa_oaep_sha256_encrypt(
    const unsigned char *modulus, size_t modulus_len, unsigned long exponent, const unsigned char *label,
    size_t label_len, const unsigned char *in, size_t in_len, unsigned char *out, size_t *out_len, char *error,
    size_t error_len) {
    int ok = 0;
    OSSL_PARAM_BLD *builder = OSSL_PARAM_BLD_new();
    BIGNUM *n = BN_bin2bn(modulus, (int)modulus_len, NULL);
    BIGNUM *e = BN_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *from = NULL, *ctx = NULL;
    EVP_PKEY *key = NULL;
    unsigned char *owned_label = NULL;
    if (!builder || !n || !e || !BN_set_word(e, exponent)) goto done;
    if (!OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_N, n)) goto done;
    if (!OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_E, e)) goto done;
    if (!(params = OSSL_PARAM_BLD_to_param(builder))) goto done;
    if (!(from = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL))) goto done;
    if (EVP_PKEY_fromdata_init(from) <= 0 || EVP_PKEY_fromdata(from, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        goto done;
    if (!(ctx = EVP_PKEY_CTX_new(key, NULL))) goto done;
    if (EVP_PKEY_encrypt_init(ctx) <= 0) goto done;
    if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0) goto done;
    if (EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) <= 0) goto done;
    if (EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0) goto done;
    if (label_len > 0) {
        if (!(owned_label = OPENSSL_memdup(label, label_len))) goto done;
        if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, owned_label, (int)label_len) <= 0) goto done;
        owned_label = NULL; /* the context owns it now */
    }
    if (EVP_PKEY_encrypt(ctx, out, out_len, in, in_len) <= 0) goto done;
    ok = 1;
done:
    if (!ok) ERR_error_string_n(ERR_get_error(), error, error_len);
    OPENSSL_free(owned_label);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(from);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(builder);
    BN_free(n);
    BN_free(e);
    return ok;
}

/* AES-128 in CFB mode with full-block feedback (CFB128) and a zero IV, the TPM's symmetric
 * wrapping for credentials and duplicates (TPM 2.0 Part 1, 11.4.6.3). swift-crypto has no CFB.
 * `out` has room for `len` bytes. Returns 1 on success. */
static inline int gh_aes128_cfb_encrypt(const unsigned char *key, const unsigned char *in, int len, unsigned char *out) {
    unsigned char iv[16] = {0};
    int written = 0, final_len = 0, ok = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return 0;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_128_cfb128(), NULL, key, iv) == 1
        && EVP_EncryptUpdate(ctx, out, &written, in, len) == 1
        && EVP_EncryptFinal_ex(ctx, out + written, &final_len) == 1 && written + final_len == len)
        ok = 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}
#endif
