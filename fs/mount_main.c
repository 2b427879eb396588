/*
 * mount_main.c - the mount.cbfs executable: `mount -t cbfs` runs it as
 * /sbin/mount.cbfs SOURCE MOUNTPOINT -o OPTIONS.
 */
#include "commands.h"

int main(int argc, char **argv)
{
    argv[0] = (char *) "mount.cbfs";
    return cmd_mount(argc, argv);
}
