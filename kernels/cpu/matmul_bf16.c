/* matmul_bf16: bf16 products through oneDNN's matmul primitive (see
 * matmul_bf16.h).
 *
 * Each thread keeps its own cache of primitives (one per shape and
 * strides), their memory objects (data handles set per call), its stream
 * and its bf16 conversion buffer, so calls from the convolution's OpenMP
 * tiles need no lock.  A primitive executed inside a parallel region runs
 * on the calling thread; outside, oneDNN spreads it over the OpenMP threads
 * (Debian's libdnnl uses the same libgomp as this code). */
#include "cpu/matmul_bf16.h"
#include "cpu/matmul.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#ifdef VF_HAVE_DNNL
#include <dnnl.h>
#endif

/* ---- conversion --------------------------------------------------------------- */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                           /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Only ever runs where vf_cpu_bf16_available said yes, i.e. on AVX-512 CPUs:
 * compiled for AVX-512 whatever the build's baseline. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("avx512f,avx512bw,avx512vl")))
#endif
static void convert_serial(uint16_t *out, const float *in, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) out[i] = f32_to_bf16(in[i]);
}

void vf_bf16_from_f32(uint16_t *out, const float *in, long n) {
    const long chunk = 16384;
#pragma omp parallel for schedule(static) if (n > chunk && !omp_in_parallel())
    for (long c = 0; c < n; c += chunk) convert_serial(out + c, in + c, n - c < chunk ? n - c : chunk);
}

/* ---- detection -------------------------------------------------------------- */
static void cpu_bf16_flags(int *avx512_bf16, int *amx_bf16) {
    *avx512_bf16 = *amx_bf16 = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid(1, a, b, c, d);
    if (!((c >> 27) & 1)) return; /* no OSXSAVE: the OS saves no AVX state */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0xe6) != 0xe6) return; /* SSE, AVX, opmask, ZMM state all saved */
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    if (!((b >> 16) & 1)) return; /* AVX512F */
    *amx_bf16 = (d >> 22) & 1;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        *avx512_bf16 = (a >> 5) & 1;
    }
#endif
}

#ifdef VF_HAVE_DNNL
/* ---- oneDNN ------------------------------------------------------------------- */
static dnnl_engine_t g_engine;
static dnnl_status_t g_engine_status = dnnl_runtime_error;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;
static void engine_create(void) { g_engine_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0); }

static void dnnl_die(const char *what, dnnl_status_t s) {
    /* Only reachable when the CPU passed vf_cpu_bf16_available (which ran a
     * product): out of memory inside oneDNN. */
    fprintf(stderr, "vflclip: oneDNN %s failed (status %d); cannot continue the bf16 computation\n", what, (int)s);
    abort();
}

typedef struct prim_key {
    long M, K, N, sa0, sa1, sb0, sb1, ldc, bias, acc;
} prim_key;

typedef struct prim_entry {
    prim_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bias, dst;
    char impl[64];
} prim_entry;

#define CACHE_SIZE 48
static __thread prim_entry tl_cache[CACHE_SIZE];
static __thread int tl_used, tl_next;
static __thread dnnl_stream_t tl_stream;
static __thread uint16_t *tl_buf;
static __thread size_t tl_buf_size;

static uint16_t *scratch(size_t n) {
    if (n > tl_buf_size) {
        free(tl_buf);
        tl_buf = aligned_alloc(64, (n * 2 + 63) / 64 * 64);
        if (!tl_buf) { fprintf(stderr, "vflclip: out of memory for a bf16 buffer of %zu values\n", n); abort(); }
        tl_buf_size = n;
    }
    return tl_buf;
}

static void entry_destroy(prim_entry *e) {
    dnnl_primitive_destroy(e->prim);
    dnnl_memory_destroy(e->src);
    dnnl_memory_destroy(e->wei);
    if (e->bias) dnnl_memory_destroy(e->bias);
    dnnl_memory_destroy(e->dst);
    memset(e, 0, sizeof *e);
}

static dnnl_status_t entry_create(prim_entry *e, const prim_key *k) {
    memset(e, 0, sizeof *e);
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    dnnl_dims_t sd = {k->M, k->K}, ss = {k->sa0, k->sa1}, wd = {k->K, k->N}, ws = {k->sb0, k->sb1};
    dnnl_dims_t bd = {1, k->N}, dd = {k->M, k->N}, ds = {k->ldc, 1};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_strides(&smd, 2, sd, dnnl_bf16, ss)) ||
        (s = dnnl_memory_desc_init_by_strides(&wmd, 2, wd, dnnl_bf16, ws)) ||
        (s = dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_strides(&dmd, 2, dd, dnnl_f32, ds)))
        return s;
    dnnl_matmul_desc_t desc;
    if ((s = dnnl_matmul_desc_init(&desc, &smd, &wmd, k->bias ? &bmd : NULL, &dmd))) return s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    if (k->acc) { /* dst = product (+ bias) + dst: accumulate onto the residual / the bias already there */
        if ((s = dnnl_primitive_attr_create(&attr)) || (s = dnnl_post_ops_create(&ops)) ||
            (s = dnnl_post_ops_append_sum(ops, 1.0f)) || (s = dnnl_primitive_attr_set_post_ops(attr, ops)))
            goto done;
    }
    dnnl_primitive_desc_t pd = NULL;
    if ((s = dnnl_primitive_desc_create(&pd, &desc, attr, g_engine, NULL))) goto done;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(e->impl, sizeof e->impl, "%s", impl);
    s = dnnl_primitive_create(&e->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s) goto done;
    if ((s = dnnl_memory_create(&e->src, &smd, g_engine, DNNL_MEMORY_NONE)) ||
        (s = dnnl_memory_create(&e->wei, &wmd, g_engine, DNNL_MEMORY_NONE)) ||
        (k->bias && (s = dnnl_memory_create(&e->bias, &bmd, g_engine, DNNL_MEMORY_NONE))) ||
        (s = dnnl_memory_create(&e->dst, &dmd, g_engine, DNNL_MEMORY_NONE)))
        goto done;
    e->key = *k;
done:
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (s) {
        if (e->prim) dnnl_primitive_destroy(e->prim);
        if (e->src) dnnl_memory_destroy(e->src);
        if (e->wei) dnnl_memory_destroy(e->wei);
        if (e->bias) dnnl_memory_destroy(e->bias);
        if (e->dst) dnnl_memory_destroy(e->dst);
        memset(e, 0, sizeof *e);
    }
    return s;
}

static dnnl_status_t get_entry(const prim_key *k, prim_entry **out) {
    pthread_once(&g_engine_once, engine_create);
    if (g_engine_status) return g_engine_status;
    if (!tl_stream) {
        dnnl_status_t s = dnnl_stream_create(&tl_stream, g_engine, dnnl_stream_default_flags);
        if (s) return tl_stream = NULL, s;
    }
    for (int i = 0; i < tl_used; i++)
        if (!memcmp(&tl_cache[i].key, k, sizeof *k)) return *out = &tl_cache[i], dnnl_success;
    prim_entry *e;
    if (tl_used < CACHE_SIZE) e = &tl_cache[tl_used];
    else { e = &tl_cache[tl_next]; tl_next = (tl_next + 1) % CACHE_SIZE; entry_destroy(e); }
    dnnl_status_t s = entry_create(e, k);
    if (s) return s;
    if (e == &tl_cache[tl_used]) tl_used++;
    *out = e;
    return dnnl_success;
}

static dnnl_status_t execute(prim_entry *e, const void *a, const void *b, const float *bias, float *c) {
    dnnl_status_t s;
    if ((s = dnnl_memory_set_data_handle(e->src, (void *)a)) || (s = dnnl_memory_set_data_handle(e->wei, (void *)b)) ||
        (e->bias && (s = dnnl_memory_set_data_handle(e->bias, (void *)bias))) ||
        (s = dnnl_memory_set_data_handle(e->dst, c)))
        return s;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}, {DNNL_ARG_BIAS, e->bias}};
    if ((s = dnnl_primitive_execute(e->prim, tl_stream, e->bias ? 4 : 3, args))) return s;
    return dnnl_stream_wait(tl_stream);
}

static void gemm(const prim_key *k, const void *a, const void *b, const float *bias, float *c) {
    prim_entry *e;
    dnnl_status_t s = get_entry(k, &e);
    if (s) dnnl_die("matmul primitive creation", s);
    if ((s = execute(e, a, b, bias, c))) dnnl_die("matmul", s);
}

/* One small product against an fp32 sum: does oneDNN run bf16 here, and how. */
static int self_test(char *impl, size_t impl_size) {
    enum { M = 64, K = 64, N = 64 };
    uint16_t a[M * K], w[N * K];
    float bias[N], out[M * N];
    for (int i = 0; i < M * K; i++) a[i] = f32_to_bf16((float)((i * 7) % 13 - 6) / 8.0f);
    for (int i = 0; i < N * K; i++) w[i] = f32_to_bf16((float)((i * 5) % 11 - 5) / 4.0f);
    for (int i = 0; i < N; i++) bias[i] = (float)i;
    prim_key k = {.M = M, .K = K, .N = N, .sa0 = K, .sa1 = 1, .sb0 = 1, .sb1 = K, .ldc = N, .bias = 1, .acc = 0};
    prim_entry *e;
    if (get_entry(&k, &e) || execute(e, a, w, bias, out)) return 0;
    snprintf(impl, impl_size, "%s", e->impl);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = bias[n];
            for (int i = 0; i < K; i++) ref += (double)bf16_to_f32(a[m * K + i]) * bf16_to_f32(w[n * K + i]);
            if (out[m * N + n] != (float)ref) return 0; /* small exact values: products and sums are exact */
        }
    return 1;
}
#endif /* VF_HAVE_DNNL */

static int g_avail = -1;
static char g_why[192];
static pthread_once_t g_avail_once = PTHREAD_ONCE_INIT;

static void detect(void) {
    int bf16, amx;
    cpu_bf16_flags(&bf16, &amx);
    const char *off = getenv("VFLCLIP_CPU_NO_BF16");
    g_avail = 0;
    if (off && *off && strcmp(off, "0") != 0) {
        snprintf(g_why, sizeof g_why, "VFLCLIP_CPU_NO_BF16 is set (testing the fallback)");
        return;
    }
    if (!bf16 && !amx) {
        snprintf(g_why, sizeof g_why, "this CPU has neither AVX512_BF16 nor AMX-BF16");
        return;
    }
    const char *has = bf16 && amx ? "AMX-BF16 and AVX512_BF16" : amx ? "AMX-BF16" : "AVX512_BF16";
#ifdef VF_HAVE_DNNL
    char impl[64] = "";
    if (!self_test(impl, sizeof impl)) {
        snprintf(g_why, sizeof g_why, "the CPU has %s but oneDNN's bf16 matmul failed its check", has);
        return;
    }
    g_avail = 1;
    snprintf(g_why, sizeof g_why, "%s, oneDNN %s", has, impl);
#else
    snprintf(g_why, sizeof g_why, "the CPU has %s but this build has no oneDNN (libdnnl-dev was not installed)", has);
#endif
}

int vf_cpu_bf16_available(char *why, size_t why_size) {
    pthread_once(&g_avail_once, detect);
    if (why && why_size) snprintf(why, why_size, "%s", g_why);
    return g_avail;
}

/* ---- products ------------------------------------------------------------------ */
void vf_bf16_linear_forward(const vf_bf16_linear *l, float *out, const float *resid, const float *inp,
                            const float *bias, int N) {
#ifdef VF_HAVE_DNNL
    const int IC = l->IC, OC = l->OC;
    if (N <= 0) return;
    uint16_t *x = scratch((size_t)N * IC);
    vf_bf16_from_f32(x, inp, (long)N * IC);
    if (resid) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (long)n * OC, resid + (long)n * OC, sizeof(float) * (size_t)OC);
    }
    prim_key k = {.M = N, .K = IC, .N = OC, .sa0 = IC, .sa1 = 1, .sb0 = 1, .sb1 = IC, .ldc = OC,
                  .bias = bias != NULL, .acc = resid != NULL};
    gemm(&k, x, l->w, bias, out);
#else
    fprintf(stderr, "vflclip: bf16 matmul called in a build without oneDNN\n");
    abort();
#endif
}

void vf_linear_forward(const vf_bf16_linear *l, float *out, const float *resid, const float *inp,
                       const float *weight, const float *bias, int N, int IC, int OC) {
    if (l) vf_bf16_linear_forward(l, out, resid, inp, bias, N);
    else if (resid) vf_matmul_residual_forward(out, resid, inp, weight, bias, N, IC, OC);
    else vf_matmul_forward(out, inp, weight, bias, N, IC, OC);
}

void vf_bf16_gemm_acc(float *C, int ldc, const uint16_t *A, int M, int K, const float *B, int ldb, int N) {
#ifdef VF_HAVE_DNNL
    if (M <= 0 || N <= 0) return;
    uint16_t *b = scratch((size_t)K * N);
    if (ldb == N) vf_bf16_from_f32(b, B, (long)K * N);
    else {
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && (long)K * N > 65536)
        for (int r = 0; r < K; r++) convert_serial(b + (size_t)r * N, B + (size_t)r * ldb, N);
    }
    prim_key k = {.M = M, .K = K, .N = N, .sa0 = K, .sa1 = 1, .sb0 = N, .sb1 = 1, .ldc = ldc, .bias = 0, .acc = 1};
    gemm(&k, A, b, NULL, C);
#else
    fprintf(stderr, "vflclip: bf16 matmul called in a build without oneDNN\n");
    abort();
#endif
}
