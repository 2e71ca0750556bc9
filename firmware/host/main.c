/*
 * main.c - the host port of the edge-ecg firmware core: a POSIX program that
 * speaks the benchmark protocol on stdin/stdout or on a terminal device.
 *
 *     ecg_host                   serve on stdin/stdout
 *     ecg_host /dev/pts/N        serve on a pseudo-terminal or serial device
 *     ecg_host --interactive     for a person at a terminal: echo and Ctrl-C
 *     ecg_host --fail-init | --fail-invoke
 *                                make a model hook fail, to test error paths
 *
 * This file holds the platform side only (serial, clock, main loop). The
 * model hooks are chosen at build time:
 *
 *   - by default (main.c and the core's .c files, nothing else) the CHECKSUM
 *     RUNNER of checksum_model.c, included below: a transport test whose
 *     outputs are a hash of the input bytes, never the ECG network;
 *   - with -DEE_HOST_MODEL_SEPARATE=1 another translation unit supplies them,
 *     e.g. aot_model.c, the real ahead-of-time C model (the "virtual board").
 *
 * See README.md for both build commands.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ee_core.h"
#include "port_model.h"
#include "th_hooks.h"

/* The checksum runner is the default model: the single-command build of
 * README.md (main.c + core) stays what it always was. */
#if !defined(EE_HOST_MODEL_SEPARATE) || !EE_HOST_MODEL_SEPARATE
#include "checksum_model.c"
#endif

/* How often ee_core_poll() runs while no byte arrives. */
#define IDLE_POLL_MS 10

static int g_in_fd = STDIN_FILENO;
static int g_out_fd = STDOUT_FILENO;
static struct timespec g_start_time;

int ee_port_fail_init = 0;
int ee_port_fail_invoke = 0;

/* ---- Serial and time ------------------------------------------------------ */

void th_serial_write(const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = write(g_out_fd, data, length);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* the host went away; the read loop will notice */
        }
        data += n;
        length -= (size_t)n;
    }
}

uint32_t th_timestamp_us(void) {
    /* Microseconds since start, so a run wraps only after 71 minutes. */
    struct timespec now;
    long long us;
    clock_gettime(CLOCK_MONOTONIC, &now);
    us = (long long)(now.tv_sec - g_start_time.tv_sec) * 1000000LL +
         (now.tv_nsec - g_start_time.tv_nsec) / 1000L;
    return (uint32_t)us;
}

/* ---- Terminal set-up and main loop ---------------------------------------- */

static struct termios g_saved_termios;
static int g_termios_saved = 0;

/* Raw mode: every byte, '%' and binary data included, reaches us unchanged
 * and nothing is echoed; `interactive` keeps echo and Ctrl-C for people. */
static void set_raw(int fd, int interactive) {
    struct termios t;
    if (!isatty(fd) || tcgetattr(fd, &t) != 0) {
        return;
    }
    g_saved_termios = t;
    g_termios_saved = 1;
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    if (interactive) {
        t.c_oflag |= (tcflag_t)OPOST;
        t.c_lflag |= (tcflag_t)(ECHO | ISIG);
    }
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= (tcflag_t)CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(fd, TCSANOW, &t);
}

static void restore_terminal(int fd) {
    if (g_termios_saved) {
        tcsetattr(fd, TCSANOW, &g_saved_termios);
    }
}

static int usage(const char *program) {
    fprintf(stderr, "usage: %s [--interactive] [--fail-init] [--fail-invoke] [DEVICE]\n", program);
    fprintf(stderr, "Serve the edge-ecg benchmark protocol on stdin/stdout or DEVICE.\n");
    fprintf(stderr, "Model: %s.\n", ee_host_model_description);
    return 2;
}

int main(int argc, char **argv) {
    const char *device = NULL;
    int interactive = 0;
    int i;
    int device_fd = -1;

    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--interactive") == 0) {
            interactive = 1;
        } else if (strcmp(argv[i], "--fail-init") == 0) {
            ee_port_fail_init = 1;
        } else if (strcmp(argv[i], "--fail-invoke") == 0) {
            ee_port_fail_invoke = 1;
        } else if (argv[i][0] == '-' || device != NULL) {
            return usage(argv[0]);
        } else {
            device = argv[i];
        }
    }
    if (device != NULL) {
        device_fd = open(device, O_RDWR | O_NOCTTY);
        if (device_fd < 0) {
            fprintf(stderr, "%s: cannot open %s: %s\n", argv[0], device, strerror(errno));
            return 1;
        }
        g_in_fd = device_fd;
        g_out_fd = device_fd;
    }
    set_raw(g_in_fd, interactive);
    clock_gettime(CLOCK_MONOTONIC, &g_start_time);

    ee_core_init();
    for (;;) {
        struct pollfd pfd;
        uint8_t buffer[4096];
        ssize_t n;
        int ready;

        pfd.fd = g_in_fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        ready = poll(&pfd, 1, IDLE_POLL_MS);
        if (ready < 0 && errno != EINTR) {
            break;
        }
        if (ready > 0) {
            n = read(g_in_fd, buffer, sizeof buffer);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                break; /* end of input, or the other side of the pty closed */
            }
            if (n > 0) {
                ee_core_rx_bytes(buffer, (size_t)n);
            }
        }
        ee_core_poll();
    }
    restore_terminal(g_in_fd);
    if (device_fd >= 0) {
        close(device_fd);
    }
    return 0;
}
