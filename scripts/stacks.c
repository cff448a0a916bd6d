// Prints every thread's user stack of a running process by walking frame pointers (Swift and most of libc keep
// them), for hosts without gdb: `stacks PID > out`; symbolize the addresses with scripts/symbolize_stacks.py.
// Each thread is stopped with ptrace for the read only. Also prints /proc/PID/maps for the load addresses.
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>

static void show(int tid) {
    char path[64], buf[512] = "";
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", tid, tid);
    FILE *f = fopen(path, "r");
    if (f) { if (!fgets(buf, sizeof buf, f)) buf[0] = 0; fclose(f); }
    char *close = strrchr(buf, ')');
    printf("thread %d state %c\n", tid, close && close[1] ? close[2] : '?');
    if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0 || ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) {
        printf("  ptrace: %s\n", strerror(errno));
        return;
    }
    int status;
    waitpid(tid, &status, __WALL);
    struct user_regs_struct r;
    if (ptrace(PTRACE_GETREGS, tid, 0, &r) == 0) {
        printf("  pc 0x%llx\n", r.rip);
        unsigned long fp = r.rbp;
        // The return address at the top (before a frame is set up) is the word at rsp.
        errno = 0;
        long top = ptrace(PTRACE_PEEKDATA, tid, (void *)r.rsp, 0);
        if (errno == 0) printf("  sp 0x%lx\n", (unsigned long)top);
        // Where the frame-pointer chain breaks (libc's futex waits keep none), the words on the stack that point into
        // code are the callers: printed as "scan" lines, filtered to code addresses by the symbolizer.
        for (int i = 1; i < 384; i++) {
            errno = 0;
            long word = ptrace(PTRACE_PEEKDATA, tid, (void *)(r.rsp + 8 * i), 0);
            if (errno != 0) break;
            if (word > 0x10000) printf("  scan 0x%lx\n", (unsigned long)word);
        }
        for (int i = 0; i < 64 && fp; i++) {
            errno = 0;
            long next = ptrace(PTRACE_PEEKDATA, tid, (void *)fp, 0);
            long ret = ptrace(PTRACE_PEEKDATA, tid, (void *)(fp + 8), 0);
            if (errno != 0 || ret == 0) break;
            printf("  fp 0x%lx\n", (unsigned long)ret);
            if ((unsigned long)next <= fp) break;
            fp = (unsigned long)next;
        }
    }
    ptrace(PTRACE_DETACH, tid, 0, 0);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: stacks PID\n"); return 2; }
    int pid = atoi(argv[1]);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) { perror(path); return 1; }
    struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] != '.') show(atoi(e->d_name));
    closedir(d);
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *m = fopen(path, "r");
    char line[1024];
    printf("maps\n");
    while (m && fgets(line, sizeof line, m)) fputs(line, stdout);
    if (m) fclose(m);
    return 0;
}
