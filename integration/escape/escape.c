/*
 * Escape attempts run inside test containers (built static, copied into a test image). Each
 * subcommand tries one thing and prints one line per attempt: "<what> ok" or "<what> <errno name>",
 * so the test can assert on outcomes; it never exits non-zero for a refused attempt.
 *
 *   escape chroot <host-marker>   the classic double-chroot escape, then look for a host file
 *   escape exe-race <seconds>     catch processes running a host binary: try to write it, to make
 *                                 its mount writable from a user namespace of our own (and change
 *                                 its mode: to the mode it has, so a success changes nothing), and
 *                                 to run it with the shim's command line
 *   escape syscalls               mount, umount, unshare, keyctl, add_key
 *   escape open <path>...         open each path for reading and read a byte
 *   escape mknod-open             make block/char nodes of host devices and open them
 *   escape euid                   print the effective uid (for setuid checks)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void report(const char *what, int rc) {
	if (rc == 0)
		printf("%s ok\n", what);
	else
		printf("%s %s\n", what, strerrorname_np(errno));
	fflush(stdout);
}

static int chroot_escape(const char *marker) {
	mkdir("/tmp/jail", 0700);
	report("chroot-jail", chroot("/tmp/jail"));
	for (int i = 0; i < 256; i++)
		chdir("..");
	report("chroot-dot", chroot("."));
	/* Where did we end up? A host file must not be visible, the container's root must be. */
	struct stat st;
	printf("host-marker %s\n", stat(marker, &st) == 0 ? "visible" : "absent");
	printf("container-root %s\n", stat("/escape", &st) == 0 ? "visible" : "absent");
	return 0;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Watches /proc for processes whose executable is not a file of the container (a different device
 * than the container's root): the runtime's helper, or the runtime binary run as a script
 * interpreter (#!/proc/self/exe). Each is stopped while it is examined so the attempts are not a
 * race, then: open its exe for writing; open it O_PATH and check whether that path is on a read-only
 * mount. A process whose exe cannot be looked at yet (a non-dumpable helper) is looked at again:
 * after its exec the same pid may run the runtime binary as an interpreter.
 */
enum seen { UNSEEN, CONTAINER, HIDDEN, REACHED };

/*
 * The attack a read-only bind mount of the binary fell to: in a user and mount namespace of our own
 * (root mapped to the container's root, so file permissions are no obstacle), clear the read-only
 * flag of the mount the binary is on with mount_setattr, then chmod it. Returns 1 when the chmod
 * worked (with the mode the file already has: nothing changes even then).
 */
static int unlock_and_chmod(int exe_fd) {
	struct stat st;
	if (fstat(exe_fd, &st) != 0)
		return 0;
	pid_t child = fork();
	if (child == 0) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
			_exit(2);
		int map = open("/proc/self/uid_map", O_WRONLY);
		if (map < 0 || write(map, "0 0 1", 5) != 5)
			_exit(3);
		struct mount_attr clear = {.attr_clr = MOUNT_ATTR_RDONLY};
		syscall(SYS_mount_setattr, exe_fd, "", AT_EMPTY_PATH, &clear, sizeof clear);
		char path[64];
		snprintf(path, sizeof path, "/proc/self/fd/%d", exe_fd);
		_exit(chmod(path, st.st_mode & 07777) == 0 ? 1 : 0);
	}
	int status = 0;
	waitpid(child, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 1;
}

/*
 * Runs the binary through the descriptor with the shim's `start` command line and a stdin that never
 * ends. Returns 1 when it acted on it (it is still running after two seconds: reading stdin),
 * 0 when it refused (exited at once).
 */
static int run_as_shim(int exe_fd) {
	int in[2];
	if (pipe(in) != 0)
		return 0;
	pid_t child = fork();
	if (child == 0) {
		dup2(in[0], 0);
		close(in[1]);
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		dup2(devnull, 2);
		char *argv[] = {"containerd-shim-myshim-v1", "-namespace", "escape", "-address", "/nonexistent", "-id", "escape", "start", NULL};
		char *envp[] = {"MYSHIM_CONFIG=/tmp/escape-config-fifo", NULL};
		syscall(SYS_execveat, exe_fd, "", argv, envp, AT_EMPTY_PATH);
		_exit(127);
	}
	close(in[0]);
	int acted = 1;
	for (int i = 0; i < 200; i++) {
		if (waitpid(child, NULL, WNOHANG) == child) {
			acted = 0;
			break;
		}
		usleep(10000);
	}
	if (acted) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	close(in[1]);
	return acted;
}

static int exe_race(double seconds) {
	struct stat root;
	stat("/", &root);
	pid_t self = getpid();
	static unsigned char seen[65536];
	int host = 0, wrote = 0, path_opened = 0, path_read_only = 0, unlocked = 0, acted = 0;
	double end = now() + seconds;
	while (now() < end) {
		DIR *proc = opendir("/proc");
		struct dirent *entry;
		while (proc && (entry = readdir(proc))) {
			pid_t pid = atoi(entry->d_name);
			if (pid <= 1 || pid == self || pid >= 65536 || seen[pid] == CONTAINER || seen[pid] == REACHED)
				continue;
			kill(pid, SIGSTOP);
			char exe[64];
			snprintf(exe, sizeof exe, "/proc/%d/exe", pid);
			struct stat st;
			int stat_rc = stat(exe, &st);
			int stat_errno = errno;
			if (stat_rc == 0 && st.st_dev == root.st_dev) {
				seen[pid] = CONTAINER;
			} else if (stat_rc != 0) {
				if (seen[pid] == UNSEEN) {
					host++;
					int fd = open(exe, O_WRONLY);
					printf("host-exe %d hidden: stat %s, write %s\n", pid, strerrorname_np(stat_errno), fd >= 0 ? "OPENED-FOR-WRITING" : strerrorname_np(errno));
					if (fd >= 0) {
						wrote++;
						close(fd);
					}
				}
				seen[pid] = HIDDEN;
			} else {
				if (seen[pid] == UNSEEN)
					host++;
				seen[pid] = REACHED;
				int fd = open(exe, O_WRONLY);
				if (fd >= 0) {
					wrote++;
					close(fd);
				}
				printf("host-exe %d reached: write %s\n", pid, fd >= 0 ? "OPENED-FOR-WRITING" : strerrorname_np(errno));
				int path = open(exe, O_PATH);
				if (path >= 0) {
					struct statvfs vfs;
					path_opened++;
					if (fstatvfs(path, &vfs) == 0 && (vfs.f_flag & ST_RDONLY))
						path_read_only++;
					else
						printf("host-exe %d reachable on a writable mount\n", pid);
					if (unlock_and_chmod(path)) {
						unlocked++;
						printf("host-exe %d: made writable from a user namespace (chmod worked)\n", pid);
					}
					if (run_as_shim(path)) {
						acted++;
						printf("host-exe %d: acted on the shim's command line\n", pid);
					}
					close(path);
				}
			}
			kill(pid, SIGCONT);
		}
		if (proc)
			closedir(proc);
	}
	printf("summary host=%d opened-for-writing=%d path-opened=%d path-read-only=%d unlocked=%d acted=%d\n", host, wrote, path_opened, path_read_only, unlocked, acted);
	return 0;
}

static int syscalls(void) {
	mkdir("/tmp/m", 0700);
	report("mount-tmpfs", mount("none", "/tmp/m", "tmpfs", 0, NULL));
	report("umount-proc", umount2("/proc", MNT_DETACH));
	report("unshare-user", unshare(CLONE_NEWUSER));
	report("unshare-mount", unshare(CLONE_NEWNS));
	report("keyctl-join", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "escape") < 0 ? -1 : 0);
	report("add-key", syscall(SYS_add_key, "user", "escape", "x", 1, KEY_SPEC_PROCESS_KEYRING) < 0 ? -1 : 0);
	return 0;
}

static void open_and_read(const char *path) {
	char label[512];
	snprintf(label, sizeof label, "open %s", path);
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		report(label, -1);
		return;
	}
	char byte;
	ssize_t n = read(fd, &byte, 1);
	if (n < 0)
		printf("%s read %s\n", label, strerrorname_np(errno));
	else
		printf("%s read %zd\n", label, n);
	close(fd);
}

static int mknod_open(void) {
	struct { const char *path; mode_t type; int major, minor; } nodes[] = {
		{"/tmp/sda", S_IFBLK, 8, 0}, {"/tmp/vda", S_IFBLK, 253, 0}, {"/tmp/mem", S_IFCHR, 1, 1}, {"/tmp/kmsg", S_IFCHR, 1, 11},
	};
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
		char label[64];
		snprintf(label, sizeof label, "mknod %s", nodes[i].path);
		report(label, mknod(nodes[i].path, nodes[i].type | 0600, makedev(nodes[i].major, nodes[i].minor)));
		open_and_read(nodes[i].path);
	}
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && strcmp(argv[1], "chroot") == 0)
		return chroot_escape(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "exe-race") == 0)
		return exe_race(atof(argv[2]));
	if (argc >= 2 && strcmp(argv[1], "syscalls") == 0)
		return syscalls();
	if (argc >= 2 && strcmp(argv[1], "open") == 0) {
		for (int i = 2; i < argc; i++)
			open_and_read(argv[i]);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "mknod-open") == 0)
		return mknod_open();
	if (argc >= 2 && strcmp(argv[1], "euid") == 0) {
		printf("euid %d\n", (int)geteuid());
		return 0;
	}
	fprintf(stderr, "usage: escape chroot|exe-race|syscalls|open|mknod-open|euid ...\n");
	return 2;
}
