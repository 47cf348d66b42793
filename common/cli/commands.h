/* commands: the subcommands of the `vflclip` program.  Each lives in its own
 * cmd_<name>.c, takes argc/argv starting at the subcommand name, and returns
 * the process exit status. */
#ifndef VF_CLI_COMMANDS_H
#define VF_CLI_COMMANDS_H

typedef struct vf_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} vf_command;

/* The table, in main.c. */
extern const vf_command vf_commands[];

#endif
