/* placeholder while check is written */
#include "commands.h"
int cmd_check(int argc, char **argv)
{
    (void) argc;
    (void) argv;
    return CBFS_EXIT_ERROR;
}
