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
 * THE MODEL IS A CHECKSUM RUNNER, FOR TRANSPORT TESTS ONLY. It never runs the
 * ECG network and its outputs mean nothing medically: each of the five int8
 * outputs is a position-weighted hash of the input bytes (see
 * checksum_runner_invoke), so a host can recompute them and prove that every
 * byte arrived intact and in its place. Never use it to measure accuracy.
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
#include "th_hooks.h"

/* How often ee_core_poll() runs while no byte arrives. */
#define IDLE_POLL_MS 10

static int g_in_fd = STDIN_FILENO;
static int g_out_fd = STDOUT_FILENO;
static struct timespec g_start_time;

static int g_fail_init = 0;
static int g_fail_invoke = 0;

static int8_t g_input_tensor[EE_INPUT_SAMPLES * EE_INPUT_LEADS];
static int8_t g_output_tensor[EE_OUTPUT_COUNT];

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

/* ---- The checksum runner ("model") --------------------------------------- */

/* Output k hashes the input bytes at positions i = k, k+5, k+10, ... in
 * order, each weighted by its position: h = h*31 + (byte+1)*(i+1) mod 2^32,
 * then folded to 8 bits. A changed, lost or moved byte changes the outputs.
 * edge_ecg/bench/protocol.py (checksum_runner_outputs) computes the same. */
static void checksum_runner_invoke(void) {
    const uint8_t *bytes = (const uint8_t *)g_input_tensor;
    const size_t n = sizeof g_input_tensor;
    size_t k;
    for (k = 0; k < EE_OUTPUT_COUNT; ++k) {
        uint32_t h = 0;
        size_t i;
        for (i = k; i < n; i += EE_OUTPUT_COUNT) {
            h = h * 31u + ((uint32_t)bytes[i] + 1u) * (uint32_t)(i + 1u);
        }
        {
            /* Fold to a byte and read it as two's complement. */
            const int folded = (int)((h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) & 0xFFu);
            g_output_tensor[k] = (int8_t)(folded >= 128 ? folded - 256 : folded);
        }
    }
}

int th_model_init(void) {
    memset(g_input_tensor, 0, sizeof g_input_tensor);
    memset(g_output_tensor, 0, sizeof g_output_tensor);
    return g_fail_init ? -1 : 0;
}

int th_model_invoke(void) {
    if (g_fail_invoke) {
        return -1;
    }
    checksum_runner_invoke();
    return 0;
}

int8_t *th_input_tensor(size_t *size_bytes) {
    *size_bytes = sizeof g_input_tensor;
    return g_input_tensor;
}

const int8_t *th_output_tensor(size_t *count) {
    *count = EE_OUTPUT_COUNT;
    return g_output_tensor;
}

th_quant_params_t th_input_quant(void) {
    /* Placeholder values of plausible size; the runner ignores them. */
    th_quant_params_t q = {1.0f / 32.0f, 0};
    return q;
}

th_quant_params_t th_output_quant(void) {
    /* Softmax-style outputs: [0, 1) in steps of 1/256. */
    th_quant_params_t q = {1.0f / 256.0f, -128};
    return q;
}

void th_target_info(th_target_info_t *info) {
    info->target_name = "host-checksum";
    info->firmware_version = "host-" EE_CORE_VERSION;
    info->model_hash = "checksum-runner";
    info->cpu_hz = 0;
    info->arena_bytes = 0;
    info->arena_used_bytes = 0;
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
    fprintf(stderr, "The model is a checksum runner for transport tests only.\n");
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
            g_fail_init = 1;
        } else if (strcmp(argv[i], "--fail-invoke") == 0) {
            g_fail_invoke = 1;
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
