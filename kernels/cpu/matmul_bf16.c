/* matmul_bf16: bf16 products through oneDNN's matmul primitive, or the AMX
 * loop of matmul_amx.c for the Linear layers it takes (see matmul_bf16.h).
 *
 * Each thread keeps its own cache of primitives (one per shape and
 * strides), their memory objects (data handles set per call), its stream
 * and its bf16 conversion buffer, so calls from the convolution's OpenMP
 * tiles need no lock.  A primitive executed inside a parallel region runs
 * on the calling thread; outside, oneDNN spreads it over the OpenMP threads
 * (Debian's libdnnl uses the same libgomp as this code). */
#include "cpu/matmul_bf16.h"
#include "cpu/amx_tiles.h"
#include "cpu/matmul_amx.h"
#include "cpu/bf16.h"

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
/* Only ever runs where vf_cpu_bf16_available said yes, i.e. on AVX-512 CPUs:
 * compiled for AVX-512 whatever the build's baseline. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("avx512f,avx512bw,avx512vl")))
#endif
static void convert_serial(uint16_t *out, const float *in, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) out[i] = vf_f32_to_bf16(in[i]);
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

/* One product's shape and layout.  All longs, so that memcmp sees no padding.
 * sb0 = sb1 = 0: B is a Linear layer's packed weight (vf_bf16_linear_pack). */
typedef struct prim_key {
    long M, K, N, sa0, sa1, sb0, sb1, ldc;
    long nb, sab, sbb, scb; /* nb > 0: nb products, A/B/C matrices sab/sbb/scb elements apart (no bias, resid) */
    long c_bf16; /* C in bf16, else fp32 */
    long bias;   /* + bias (N) */
    long acc;    /* C += product (a sum post-op) */
    long resid;  /* C = product + resid (a binary-add post-op; resid rows ldc apart, fp32) */
    long act;    /* 1 + vf_activation applied to the sum (an eltwise post-op), or 0 */
} prim_key;

typedef struct prim_entry {
    prim_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bias, dst, resid;
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
    if (e->resid) dnnl_memory_destroy(e->resid);
    memset(e, 0, sizeof *e);
}

/* The blocked layout oneDNN wants a (K, N) weight in: asked of a product
 * with 256 rows (the layout does not depend on M: checked for 1..9232). */
static dnnl_status_t packed_md(dnnl_memory_desc_t *md, long K, long N) {
    dnnl_memory_desc_t smd, wmd, dmd;
    dnnl_dims_t sd = {256, K}, wd = {K, N}, dd = {256, N};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&smd, 2, sd, dnnl_bf16, dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_tag(&wmd, 2, wd, dnnl_bf16, dnnl_format_tag_any)) ||
        (s = dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab)))
        return s;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    if ((s = dnnl_matmul_desc_init(&desc, &smd, &wmd, NULL, &dmd)) ||
        (s = dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, NULL)))
        return s;
    *md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    return dnnl_success;
}

static dnnl_alg_kind_t eltwise_alg(long act, float *alpha) {
    *alpha = 0.0f;
    switch ((vf_activation)(act - 1)) {
    case VF_ACT_QUICK_GELU: *alpha = 1.702f; return dnnl_eltwise_swish; /* x * sigmoid(1.702 x) */
    case VF_ACT_GELU: return dnnl_eltwise_gelu_erf;
    case VF_ACT_GELU_TANH: return dnnl_eltwise_gelu_tanh;
    }
    return dnnl_alg_kind_undef;
}

static dnnl_status_t entry_create(prim_entry *e, const prim_key *k) {
    memset(e, 0, sizeof *e);
    dnnl_memory_desc_t smd, wmd, bmd, dmd, rmd;
    /* 2-d products, or 3-d with the batch first (nb > 0) */
    const int nd = k->nb ? 3 : 2, o = k->nb ? 1 : 0;
    dnnl_dims_t sd = {k->nb, k->M, k->K}, ss = {k->sab, k->sa0, k->sa1}, wd = {k->nb, k->K, k->N}, ws = {k->sbb, k->sb0, k->sb1};
    dnnl_dims_t dd = {k->nb, k->M, k->N}, ds = {k->scb, k->ldc, 1}, bd = {1, k->N};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_strides(&smd, nd, sd + 1 - o, dnnl_bf16, ss + 1 - o)) ||
        (s = k->sb0 || k->sb1 ? dnnl_memory_desc_init_by_strides(&wmd, nd, wd + 1 - o, dnnl_bf16, ws + 1 - o)
                              : packed_md(&wmd, k->K, k->N)) ||
        (s = dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_strides(&dmd, nd, dd + 1 - o, k->c_bf16 ? dnnl_bf16 : dnnl_f32, ds + 1 - o)) ||
        (s = dnnl_memory_desc_init_by_strides(&rmd, nd, dd + 1 - o, dnnl_f32, ds + 1 - o)))
        return s;
    dnnl_matmul_desc_t desc;
    if ((s = dnnl_matmul_desc_init(&desc, &smd, &wmd, k->bias ? &bmd : NULL, &dmd))) return s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    if (k->acc || k->resid || k->act) {
        float alpha;
        const dnnl_alg_kind_t alg = eltwise_alg(k->act, &alpha);
        if ((s = dnnl_primitive_attr_create(&attr)) || (s = dnnl_post_ops_create(&ops)) ||
            (k->acc && (s = dnnl_post_ops_append_sum(ops, 1.0f))) ||
            (k->act && (s = dnnl_post_ops_append_eltwise(ops, 1.0f, alg, alpha, 0.0f))) ||
            (k->resid && (s = dnnl_post_ops_append_binary(ops, dnnl_binary_add, &rmd))) ||
            (s = dnnl_primitive_attr_set_post_ops(attr, ops)))
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
        (s = dnnl_memory_create(&e->dst, &dmd, g_engine, DNNL_MEMORY_NONE)) ||
        (k->resid && (s = dnnl_memory_create(&e->resid, &rmd, g_engine, DNNL_MEMORY_NONE))))
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
        if (e->resid) dnnl_memory_destroy(e->resid);
        memset(e, 0, sizeof *e);
    }
    return s;
}

/* The engine, and this thread's stream. */
static dnnl_status_t thread_ready(void) {
    pthread_once(&g_engine_once, engine_create);
    if (g_engine_status) return g_engine_status;
    if (!tl_stream) {
        dnnl_status_t s = dnnl_stream_create(&tl_stream, g_engine, dnnl_stream_default_flags);
        if (s) return tl_stream = NULL, s;
    }
    return dnnl_success;
}

static dnnl_status_t get_entry(const prim_key *k, prim_entry **out) {
    dnnl_status_t s0 = thread_ready();
    if (s0) return s0;
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

static dnnl_status_t execute(prim_entry *e, const void *a, const void *b, const float *bias, const float *resid, void *c) {
    dnnl_status_t s;
    if ((s = dnnl_memory_set_data_handle(e->src, (void *)a)) || (s = dnnl_memory_set_data_handle(e->wei, (void *)b)) ||
        (e->bias && (s = dnnl_memory_set_data_handle(e->bias, (void *)bias))) ||
        (e->resid && (s = dnnl_memory_set_data_handle(e->resid, (void *)resid))) ||
        (s = dnnl_memory_set_data_handle(e->dst, c)))
        return s;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}};
    int n = 3;
    if (e->bias) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bias};
    if (e->resid) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(!!e->key.acc + !!e->key.act) | DNNL_ARG_SRC_1, e->resid};
    if ((s = dnnl_primitive_execute(e->prim, tl_stream, n, args))) return s;
    return dnnl_stream_wait(tl_stream);
}

static void gemm(const prim_key *k, const void *a, const void *b, const float *bias, const float *resid, void *c) {
    prim_entry *e;
    dnnl_status_t s = get_entry(k, &e);
    if (s) dnnl_die("matmul primitive creation", s);
    if ((s = execute(e, a, b, bias, resid, c))) dnnl_die("matmul", s);
}

/* One small product against an fp32 sum: does oneDNN run bf16 here, and how. */
static int self_test(char *impl, size_t impl_size) {
    enum { M = 64, K = 64, N = 64 };
    uint16_t a[M * K], w[N * K];
    float bias[N], out[M * N];
    for (int i = 0; i < M * K; i++) a[i] = vf_f32_to_bf16((float)((i * 7) % 13 - 6) / 8.0f);
    for (int i = 0; i < N * K; i++) w[i] = vf_f32_to_bf16((float)((i * 5) % 11 - 5) / 4.0f);
    for (int i = 0; i < N; i++) bias[i] = (float)i;
    prim_key k = {.M = M, .K = K, .N = N, .sa0 = K, .sa1 = 1, .sb0 = 1, .sb1 = K, .ldc = N, .bias = 1};
    prim_entry *e;
    if (get_entry(&k, &e) || execute(e, a, w, bias, NULL, out)) return 0;
    snprintf(impl, impl_size, "%s", e->impl);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = bias[n];
            for (int i = 0; i < K; i++) ref += (double)vf_bf16_to_f32(a[m * K + i]) * vf_bf16_to_f32(w[n * K + i]);
            if (out[m * N + n] != (float)ref) return 0; /* small exact values: products and sums are exact */
        }
    return 1;
}
#endif /* VF_HAVE_DNNL */

static int g_avail = -1, g_amx;
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
    const char *no_amx = getenv("VFLCLIP_CPU_NO_AMX");
    /* the AMX kernels' epilogues round with AVX512_BF16's vcvtneps2bf16 */
    g_amx = amx && bf16 && !(no_amx && *no_amx && strcmp(no_amx, "0") != 0) && vf_amx_enable();
    snprintf(g_why, sizeof g_why, "%s, oneDNN %s%s", has, impl, g_amx ? ", Linear layers and attention on AMX tiles" : "");
#else
    snprintf(g_why, sizeof g_why, "the CPU has %s but this build has no oneDNN (libdnnl-dev was not installed)", has);
#endif
}

int vf_cpu_bf16_amx(void) {
    pthread_once(&g_avail_once, detect);
    return g_avail && g_amx;
}

int vf_cpu_bf16_available(char *why, size_t why_size) {
    pthread_once(&g_avail_once, detect);
    if (why && why_size) snprintf(why, why_size, "%s", g_why);
    return g_avail;
}

/* ---- products ------------------------------------------------------------------ */
#ifndef VF_HAVE_DNNL
static void no_dnnl(void) {
    fprintf(stderr, "vflclip: bf16 matmul called in a build without oneDNN\n");
    abort();
}
#endif

/* Whether an (OC, IC) layer runs on this file's own AMX loop (matmul_amx.h)
 * rather than oneDNN; the packing follows the same answer. */
static int linear_on_amx(int IC, int OC) { return vf_amx_linear_fits(IC, OC) && vf_cpu_bf16_amx(); }

size_t vf_bf16_linear_bytes(int IC, int OC) {
    if (linear_on_amx(IC, OC)) return sizeof(uint16_t) * (size_t)IC * OC;
#ifdef VF_HAVE_DNNL
    dnnl_memory_desc_t md;
    if (!vf_cpu_bf16_available(NULL, 0) || thread_ready() || packed_md(&md, IC, OC)) return 0;
    return dnnl_memory_desc_get_size(&md);
#else
    (void)IC, (void)OC;
    return 0;
#endif
}

int vf_bf16_linear_pack(void *dst, const float *w, int IC, int OC) {
    if (linear_on_amx(IC, OC)) {
        uint16_t *bf = malloc(sizeof(uint16_t) * (size_t)IC * OC);
        if (!bf) return -1;
        vf_bf16_from_f32(bf, w, (long)IC * OC);
        vf_amx_linear_pack(dst, bf, IC, OC);
        free(bf);
        return 0;
    }
#ifdef VF_HAVE_DNNL
    dnnl_memory_desc_t plain, packed;
    dnnl_dims_t wd = {IC, OC};
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t from = NULL, to = NULL;
    uint16_t *bf = malloc(sizeof(uint16_t) * (size_t)IC * OC);
    dnnl_status_t s = bf ? thread_ready() : dnnl_out_of_memory;
    if (s || (s = packed_md(&packed, IC, OC)) || (s = dnnl_memory_desc_init_by_tag(&plain, 2, wd, dnnl_bf16, dnnl_ba)))
        goto done;
    vf_bf16_from_f32(bf, w, (long)IC * OC); /* (OC, IC) rows: the (IC, OC) matrix in "ba" order */
    if ((s = dnnl_memory_create(&from, &plain, g_engine, bf)) || (s = dnnl_memory_create(&to, &packed, g_engine, dst)) ||
        (s = dnnl_reorder_primitive_desc_create(&rpd, &plain, g_engine, &packed, g_engine, NULL)) ||
        (s = dnnl_primitive_create(&reorder, rpd)))
        goto done;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (!(s = dnnl_primitive_execute(reorder, tl_stream, 2, args))) s = dnnl_stream_wait(tl_stream);
done:
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (from) dnnl_memory_destroy(from);
    if (to) dnnl_memory_destroy(to);
    free(bf);
    return s ? -1 : 0;
#else
    (void)dst, (void)w, (void)IC, (void)OC;
    no_dnnl();
    return -1;
#endif
}

void vf_bf16_linear_forward(const vf_bf16_linear *l, void *out, int out_bf16, const float *resid, const uint16_t *inp,
                            const float *bias, int N, const vf_activation *act) {
    if (linear_on_amx(l->IC, l->OC)) {
        vf_amx_linear_forward(l->w, l->IC, l->OC, out, out_bf16, resid, inp, bias, N, act);
        return;
    }
#ifdef VF_HAVE_DNNL
    if (N <= 0) return;
    prim_key k = {.M = N, .K = l->IC, .N = l->OC, .sa0 = l->IC, .sa1 = 1, .ldc = l->OC, .c_bf16 = out_bf16 != 0,
                  .bias = bias != NULL, .resid = resid != NULL, .act = act ? 1 + (long)*act : 0};
    gemm(&k, inp, l->w, bias, resid, out);
#else
    (void)l, (void)out, (void)out_bf16, (void)resid, (void)inp, (void)bias, (void)N, (void)act;
    no_dnnl();
#endif
}

void vf_bf16_gemm_batched(int batch, int M, int K, int N, vf_bf16_strided C, int c_bf16, vf_bf16_strided A,
                          vf_bf16_strided B) {
#ifdef VF_HAVE_DNNL
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (A.col != 1 || C.col != 1) {
        fprintf(stderr, "vflclip: vf_bf16_gemm_batched: A and C need contiguous rows\n");
        abort();
    }
    prim_key k = {.M = M, .K = K, .N = N, .sa0 = A.row, .sa1 = 1, .sb0 = B.row, .sb1 = B.col, .ldc = C.row,
                  .c_bf16 = c_bf16 != 0, .nb = batch, .sab = A.batch, .sbb = B.batch, .scb = C.batch};
    gemm(&k, A.p, B.p, NULL, NULL, C.p);
#else
    (void)batch, (void)M, (void)K, (void)N, (void)C, (void)c_bf16, (void)A, (void)B;
    no_dnnl();
#endif
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
    prim_key k = {.M = M, .K = K, .N = N, .sa0 = K, .sa1 = 1, .sb0 = N, .sb1 = 1, .ldc = ldc, .acc = 1};
    gemm(&k, A, b, NULL, NULL, C);
#else
    (void)C, (void)ldc, (void)A, (void)M, (void)K, (void)B, (void)ldb, (void)N;
    no_dnnl();
#endif
}
