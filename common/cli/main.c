/* main: the `vflclip` admin/user program; dispatches to subcommands. */
#include "cli/commands.h"
#include "util/log.h"
#include "cpu/blas_setup.h"
#include "daemon/version.h"

#include <stdio.h>
#include <string.h>

/* Each subcommand adds its declaration and one row here. */
int vf_cmd_dataset(int argc, char **argv);
int vf_cmd_train(int argc, char **argv);
int vf_cmd_evaluate(int argc, char **argv);
int vf_cmd_predict(int argc, char **argv);
int vf_cmd_provision(int argc, char **argv);
int vf_cmd_cert(int argc, char **argv);
int vf_cmd_tokenize(int argc, char **argv);
int vf_cmd_preprocess(int argc, char **argv);
int vf_cmd_coop_grad(int argc, char **argv);
int vf_cmd_coop_loss(int argc, char **argv);
int vf_cmd_coop_optim(int argc, char **argv);
int vf_cmd_coop_lr(int argc, char **argv);
int vf_cmd_rpc_test(int argc, char **argv);
int vf_cmd_embed(int argc, char **argv);
int vf_cmd_make_model(int argc, char **argv);
int vf_cmd_run(int argc, char **argv);
int vf_cmd_status(int argc, char **argv);
int vf_cmd_dp_epsilon(int argc, char **argv);
int vf_cmd_transcript(int argc, char **argv);

const vf_command vf_commands[] = {
    {"embed", "projected CLIP embeddings of images or texts (.npy)", vf_cmd_embed},
    {"make-model", "write a random-weight CLIP model directory (tests and demos only)", vf_cmd_make_model},
    {"provision", "create the federation's CA and participant kits, or add participants", vf_cmd_provision},
    {"cert", "show a certificate or revocation list; revoke a certificate; re-sign the list", vf_cmd_cert},
    {"train", "CoOp prompt tuning in one process: embeddings, training, metrics, plots, context", vf_cmd_train},
    {"evaluate", "metrics of a saved CoOp context on a data split (or of given scores)", vf_cmd_evaluate},
    {"predict", "apply a run's classifier to images: predicted class and every class probability", vf_cmd_predict},
    {"dataset", "show what a data set (npz or image folder + labels CSV) holds", vf_cmd_dataset},
    {"coop-grad", "(debug) CoOp loss and dL/dctx for a model, prompts and image embeddings", vf_cmd_coop_grad},
    {"coop-loss", "(debug) CoOp eq.1 loss, logits and dL/dtext for given features", vf_cmd_coop_loss},
    {"coop-optim", "(debug) Adam/SGD steps with CoOp's lr schedule over given gradients", vf_cmd_coop_optim},
    {"coop-lr", "(debug) the learning rate of each epoch under CoOp's schedule", vf_cmd_coop_lr},
    {"tokenize", "print the CLIP token ids of texts (as HF's fast CLIPTokenizer)", vf_cmd_tokenize},
    {"preprocess", "decode and preprocess images as CLIPImageProcessor, to .npy", vf_cmd_preprocess},
    {"rpc-test", "(debug) serve or call the gRPC transport's test service (interop tests, benchmark)", vf_cmd_rpc_test},
    {"run", "start, watch, abort a federated run, fetch its results (Admin API of the aggregator)", vf_cmd_run},
    {"status", "the aggregator, its current run and the connected parties", vf_cmd_status},
    {"dp-epsilon", "epsilon of the subsampled Gaussian mechanism (the runs' RDP accountant)", vf_cmd_dp_epsilon},
    {"transcript", "verify a run transcript: hash chain, aggregator signature, a party's own log", vf_cmd_transcript},
    {NULL, NULL, NULL},
};

static void usage(FILE *out) {
    fprintf(out, "usage: vflclip <command> [options]\n\ncommands:\n");
    for (const vf_command *c = vf_commands; c->name; c++) fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "\nRun 'vflclip <command> --help' for a command's options; 'vflclip --version' for the version and build.\n");
}

int main(int argc, char **argv) {
    vf_blas_ensure_native_kernels(); /* may re-exec (OpenBLAS kernels, OpenMP waiting): before anything else */
    vf_log_set_program("vflclip");
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        vf_version_print(stdout, "vflclip");
        return 0;
    }
    for (const vf_command *c = vf_commands; c->name; c++)
        if (strcmp(c->name, argv[1]) == 0) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "vflclip: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
