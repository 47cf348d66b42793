/* loss: CoOp cross-entropy over scaled cosine similarities and its gradient
 * with respect to the text features (see loss.h). */
#include "coop/loss.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

long vf_coop_loss_scratch_floats(int N, int C, int D) {
    /* normalised image (N,D), normalised text (C,D), text norms (C),
     * logits/probabilities (N,C), d(normalised text) (C,D) */
    return (long)N * D + (long)C * D + C + (long)N * C + (long)C * D;
}

int vf_l2_normalize_rows(float *out, float *norms, const float *x, int R, int D) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * D;
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)xr[i] * xr[i];
        float n = (float)sqrt(s);
        if (!(n > 0)) return -1;
        if (norms) norms[r] = n;
        float inv = 1.0f / n;
        for (int i = 0; i < D; i++) out[(size_t)r * D + i] = xr[i] * inv;
    }
    return 0;
}

float vf_coop_loss(const float *image, const int *labels, int N, const float *text, int C, int D, float logit_scale,
                   float *logits, float *dtext, float *scratch) {
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C) return NAN;
    float *img_n = scratch;                        // (N, D)
    float *txt_n = img_n + (size_t)N * D;          // (C, D)
    float *txt_norm = txt_n + (size_t)C * D;       // (C)
    float *prob = txt_norm + C;                    // (N, C): logits, then softmax - onehot
    float *dtxt_n = prob + (size_t)N * C;          // (C, D)
    if (vf_l2_normalize_rows(img_n, NULL, image, N, D) != 0) return NAN;
    if (vf_l2_normalize_rows(txt_n, txt_norm, text, C, D) != 0) return NAN;
    float s = expf(logit_scale);
    // logits (N, C) = s * img_n (N, D) @ txt_n^T (D, C)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, D, s, img_n, D, txt_n, D, 0.0f, prob, C);
    if (logits) memcpy(logits, prob, (size_t)N * C * sizeof(float));
    double loss = 0;
    for (int i = 0; i < N; i++) {
        float *row = prob + (size_t)i * C;
        float maxv = row[0];
        for (int c = 1; c < C; c++) if (row[c] > maxv) maxv = row[c];
        double sum = 0;
        for (int c = 0; c < C; c++) sum += exp((double)row[c] - maxv);
        loss += log(sum) + maxv - row[labels[i]];
        /* d loss / d logits = (softmax - onehot) / N */
        for (int c = 0; c < C; c++) row[c] = (float)(exp((double)row[c] - maxv) / sum) / N;
        row[labels[i]] -= 1.0f / N;
    }
    if (dtext) {
        // d txt_n (C, D) = s * dlogits^T (C, N) @ img_n (N, D)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, D, N, s, prob, C, img_n, D, 0.0f, dtxt_n, D);
        /* through t_n = t / |t|: dt = (dt_n - t_n (t_n . dt_n)) / |t| */
        for (int c = 0; c < C; c++) {
            const float *tn = txt_n + (size_t)c * D, *g = dtxt_n + (size_t)c * D;
            float dot = 0;
            for (int i = 0; i < D; i++) dot += tn[i] * g[i];
            float inv = 1.0f / txt_norm[c];
            for (int i = 0; i < D; i++) dtext[(size_t)c * D + i] = (g[i] - tn[i] * dot) * inv;
        }
    }
    return (float)(loss / N);
}
