/* fuzz_crl: a revocation list file as the daemons load it at start and on
 * SIGHUP (vf_pki_load_crl: PEM or DER, through mbedTLS, with our expiry
 * checks) and as `vflclip cert revoke` reads the existing list back
 * (vf_pki_crl_entries: the entries and the cRLNumber extension, parsed by
 * our own DER code); and the input as serial text (vf_pki_serial_from_hex). */
#include "pki/pki.h"
#include "pki/pki_crl.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("crl.pem", data, size);
    mbedtls_x509_crl crl;
    vf_error err;
    if (vf_pki_load_crl(path, &crl, &err) == 0) {
        vf_pki_revoked *e = NULL;
        int n = 0;
        unsigned long long number = 0;
        if (vf_pki_crl_entries(&crl, &e, &n, &number, &err) == 0) {
            for (int i = 0; i < n; i++) {
                char hex[80];
                if (e[i].serial_len > sizeof e[i].serial) abort();
                vf_pki_serial_to_hex(e[i].serial, e[i].serial_len, hex, sizeof hex);
            }
            free(e);
        }
    }
    mbedtls_x509_crl_free(&crl);
    if (size < 200) {
        char *text = fuzz_cstr(data, size);
        unsigned char serial[32];
        size_t len;
        vf_pki_serial_from_hex(text, serial, sizeof serial, &len, &err);
        free(text);
    }
    return 0;
}
