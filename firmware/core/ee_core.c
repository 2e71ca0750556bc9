/*
 * ee_core.c - the benchmark harness: command parser, input loading,
 * timed inference and result reporting. Written for edge-ecg; the wire
 * behaviour follows the MLPerf Tiny / EEMBC reference protocol.
 *
 * No dynamic allocation, no stdio, no platform headers: all I/O goes through
 * th_hooks.h, and ee_util.c formats numbers so that ports need no printf.
 */
#include "ee_core.h"

#include <string.h>

#include "ee_util.h"
#include "th_hooks.h"

/* Most tokens any command takes ("db load N", "infer N W"), plus one to
 * detect extra arguments. */
#define MAX_TOKENS 4

typedef struct {
    /* Command being assembled; one extra byte for the final NUL. */
    char cmd[EE_CMD_SIZE + 1];
    size_t cmd_len;
    int cmd_too_long; /* discard up to the next terminator, then report */

    /* Load buffer: the host fills it with `db` commands; `infer` copies it
     * into the model's input tensor. */
    uint8_t input[EE_INPUT_BYTES];
    size_t load_expected; /* bytes announced by db load/bin; 0: none */
    size_t load_received;

    /* Binary load in progress: bytes bypass the command parser. */
    int bin_active;
    uint32_t bin_crc;
    int bin_activity; /* a byte arrived since the last ee_core_poll() */
    uint32_t bin_last_activity_us;

    int model_ready;
    int have_results;

    /* Output is gathered here and written one line at a time. */
    char tx[EE_TX_BUFFER_BYTES];
    size_t tx_len;
} core_state_t;

static core_state_t s;

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static void tx_flush(void) {
    if (s.tx_len > 0) {
        th_serial_write(s.tx, s.tx_len);
        s.tx_len = 0;
    }
}

static void tx_char(char c) {
    if (s.tx_len == sizeof s.tx) {
        tx_flush();
    }
    s.tx[s.tx_len++] = c;
}

static void tx_str(const char *text) {
    if (text == NULL) {
        return;
    }
    while (*text != '\0') {
        tx_char(*text++);
    }
}

/* End the current line and send it. */
static void tx_end_line(void) {
    tx_str(EE_LINE_END);
    tx_flush();
}

static void tx_line(const char *text) {
    tx_str(text);
    tx_end_line();
}

static void tx_u32(uint32_t value) {
    char digits[10];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n > 0) {
        tx_char(digits[--n]);
    }
}

static void tx_size(size_t value) {
    /* Sizes here never exceed 32 bits; saturate rather than wrap if one did. */
    tx_u32(value > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)value);
}

static void tx_i32(int32_t value) {
    if (value < 0) {
        tx_char('-');
        /* Negate in unsigned arithmetic so INT32_MIN works too. */
        tx_u32(0u - (uint32_t)value);
    } else {
        tx_u32((uint32_t)value);
    }
}

static void tx_hex32(uint32_t value) {
    static const char hex[] = "0123456789abcdef";
    int shift;
    for (shift = 28; shift >= 0; shift -= 4) {
        tx_char(hex[(value >> shift) & 0xFu]);
    }
}

static void tx_float(float value) {
    char text[EE_FLOAT_TEXT_MAX];
    ee_format_float(text, value);
    tx_str(text);
}

/* Echo host-supplied text, replacing bytes that would break a line. */
static void tx_sanitized(const char *text) {
    for (; *text != '\0'; ++text) {
        unsigned char c = (unsigned char)*text;
        tx_char(c >= 0x20u && c < 0x7Fu && c != ']' ? (char)c : '?');
    }
}

/* JSON string literal; the strings come from the port, so escape them. */
static void tx_json_string(const char *text) {
    static const char hex[] = "0123456789abcdef";
    tx_char('"');
    for (; text != NULL && *text != '\0'; ++text) {
        unsigned char c = (unsigned char)*text;
        if (c == '"' || c == '\\') {
            tx_char('\\');
            tx_char((char)c);
        } else if (c < 0x20u || c >= 0x7Fu) {
            tx_str("\\u00");
            tx_char(hex[c >> 4]);
            tx_char(hex[c & 0xFu]);
        } else {
            tx_char((char)c);
        }
    }
    tx_char('"');
}

/* Errors read e-[<text>] or e-[<text>: <detail>]: open, add detail, close. */
static void error_open(const char *text) {
    tx_str(EE_ERR_OPEN);
    tx_str(text);
}

static void error_close(void) {
    tx_str(EE_BRACKET_END);
    tx_end_line();
}

static void error_line(const char *text) {
    error_open(text);
    error_close();
}

/* ------------------------------------------------------------------------ */
/* Parsing helpers                                                          */
/* ------------------------------------------------------------------------ */

/* A decimal count: digits only, no sign, fits in 32 bits. */
static int parse_u32(const char *text, uint32_t *value) {
    uint32_t v = 0;
    if (*text == '\0') {
        return -1;
    }
    for (; *text != '\0'; ++text) {
        uint32_t digit;
        if (*text < '0' || *text > '9') {
            return -1;
        }
        digit = (uint32_t)(*text - '0');
        if (v > (0xFFFFFFFFu - digit) / 10u) {
            return -1;
        }
        v = v * 10u + digit;
    }
    *value = v;
    return 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int is_separator(char c) {
    /* Spaces separate tokens; stray line ends and NULs from a terminal or
     * a host library are treated the same way rather than as command text. */
    return c == EE_CMD_DELIMITER || c == '\r' || c == '\n' || c == '\t' || c == '\0';
}

/* Split cmd[0..len) in place into NUL-terminated tokens. Returns the number
 * of tokens, or MAX_TOKENS + 1 when there are more than MAX_TOKENS. */
static int split_tokens(char *cmd, size_t len, char *tokens[MAX_TOKENS]) {
    int count = 0;
    size_t i = 0;
    cmd[len] = '\0';
    while (i < len) {
        while (i < len && is_separator(cmd[i])) {
            cmd[i++] = '\0';
        }
        if (i == len) {
            break;
        }
        if (count == MAX_TOKENS) {
            return MAX_TOKENS + 1;
        }
        tokens[count++] = &cmd[i];
        while (i < len && !is_separator(cmd[i])) {
            i++;
        }
    }
    return count;
}

/* Parse tokens[index] as a count when present, reporting a bad one. */
static int parse_count_arg(char *tokens[], int count, int index, uint32_t *value) {
    if (index >= count) {
        return 0;
    }
    if (parse_u32(tokens[index], value) != 0) {
        error_open(EE_ERR_BAD_NUMBER);
        tx_str(": ");
        tx_sanitized(tokens[index]);
        error_close();
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */
/* ------------------------------------------------------------------------ */

static int load_complete(void) {
    return s.load_expected > 0 && s.load_received == s.load_expected;
}

static void cmd_name(void) {
    th_target_info_t info;
    memset(&info, 0, sizeof info);
    th_target_info(&info);
    tx_str(EE_MSG_NAME);
    tx_sanitized(info.target_name != NULL ? info.target_name : "");
    tx_str(EE_BRACKET_END);
    tx_end_line();
}

static void cmd_profile(void) {
    tx_str(EE_MSG_PROFILE);
    tx_str(EE_PROFILE_STRING);
    tx_str(EE_BRACKET_END);
    tx_end_line();
    tx_str(EE_MSG_MODEL);
    tx_str(EE_MODEL_ID);
    tx_str(EE_BRACKET_END);
    tx_end_line();
}

static void cmd_timestamp(void) {
    tx_str(EE_MSG_LAP_US);
    tx_u32(th_timestamp_us());
    tx_end_line();
}

static void cmd_help(void) {
    static const char *const lines[] = {
        "edge-ecg core " EE_CORE_VERSION " (" EE_PROFILE_STRING ", " EE_EXT_PROTOCOL_VERSION ")",
        "help          : print this list",
        "name          : print the device name",
        "profile       : print the profile and the model id",
        "timestamp     : print a microsecond timestamp",
        "db load N     : start a hex load of N input bytes",
        "db HH[HH]*    : append hex bytes to the load",
        "db bin N      : the next N raw bytes are the input (edge-ecg)",
        "infer [N [W]] : W warm-ups (default 10), then N timed inferences (default 1)",
        "results       : print the last outputs, dequantized and int8",
        "info          : print target and model facts as JSON (edge-ecg)",
    };
    size_t i;
    for (i = 0; i < sizeof lines / sizeof lines[0]; ++i) {
        tx_str(EE_MSG_HELP);
        tx_line(lines[i]);
    }
}

/* Validate a `db load N` / `db bin N` size. */
static int check_load_size(char *tokens[], int count, uint32_t *size) {
    if (count > 3) {
        error_line(EE_ERR_TOO_MANY_ARGUMENTS);
        return -1;
    }
    if (count < 3) {
        error_open(EE_ERR_BAD_NUMBER);
        tx_str(": missing byte count");
        error_close();
        return -1;
    }
    if (parse_count_arg(tokens, count, 2, size) != 0) {
        return -1;
    }
    if (*size == 0u || *size > (uint32_t)EE_INPUT_BYTES) {
        error_open(EE_ERR_LOAD_SIZE);
        tx_str(": ");
        tx_u32(*size);
        tx_str(" not in 1..");
        tx_size(EE_INPUT_BYTES);
        error_close();
        return -1;
    }
    return 0;
}

static void reply_expecting(uint32_t size) {
    tx_str(EE_MSG_EXPECTING);
    tx_u32(size);
    tx_str(EE_MSG_EXPECTING_END);
    tx_end_line();
}

/* `db HH[HH]*`: the whole chunk is checked before any byte is stored, so a
 * rejected chunk changes nothing and the host may simply resend it. */
static void db_append_hex(const char *hex) {
    size_t digits = strlen(hex);
    size_t count = digits / 2u;
    size_t i;

    if (s.load_expected == 0) {
        error_line(EE_ERR_NO_LOAD);
        return;
    }
    if (digits % 2u != 0u) {
        error_line(EE_ERR_HEX_ODD);
        return;
    }
    for (i = 0; i < digits; ++i) {
        if (hex_value(hex[i]) < 0) {
            char pair[3];
            pair[0] = hex[i & ~(size_t)1];
            pair[1] = hex[i | 1u];
            pair[2] = '\0';
            error_open(EE_ERR_HEX_DIGIT);
            tx_str(": '");
            tx_sanitized(pair);
            tx_str("'");
            error_close();
            return;
        }
    }
    if (count > s.load_expected - s.load_received) {
        error_open(EE_ERR_LOAD_OVERFLOW);
        tx_str(": ");
        tx_size(count);
        tx_str(" > ");
        tx_size(s.load_expected - s.load_received);
        tx_str(" remaining");
        error_close();
        return;
    }
    for (i = 0; i < count; ++i) {
        s.input[s.load_received++] =
            (uint8_t)(hex_value(hex[2u * i]) * 16 + hex_value(hex[2u * i + 1u]));
    }
    if (load_complete()) {
        tx_line(EE_MSG_LOAD_DONE);
    }
}

static void cmd_db(char *tokens[], int count) {
    uint32_t size;
    if (count < 2) {
        error_line(EE_ERR_DB_SUBCOMMAND);
    } else if (strcmp(tokens[1], EE_CMD_DB_LOAD) == 0) {
        if (check_load_size(tokens, count, &size) == 0) {
            s.load_expected = size;
            s.load_received = 0;
            reply_expecting(size);
        }
    } else if (strcmp(tokens[1], EE_CMD_DB_BIN) == 0) {
        if (check_load_size(tokens, count, &size) == 0) {
            s.load_expected = size;
            s.load_received = 0;
            s.bin_active = 1;
            s.bin_crc = 0;
            s.bin_activity = 0;
            s.bin_last_activity_us = th_timestamp_us();
            reply_expecting(size);
        }
    } else if (count > 2) {
        error_line(EE_ERR_TOO_MANY_ARGUMENTS);
    } else {
        db_append_hex(tokens[1]);
    }
}

static void print_results(void) {
    size_t count = 0;
    const int8_t *out = th_output_tensor(&count);
    th_quant_params_t q = th_output_quant();
    size_t i;

    tx_str(EE_MSG_RESULTS);
    for (i = 0; i < count; ++i) {
        /* Same expression as TFLite's dequantize, in float32. */
        float value = q.scale * (float)((int32_t)out[i] - q.zero_point);
        if (i > 0) {
            tx_char(',');
        }
        tx_float(value);
    }
    tx_str(EE_BRACKET_END);
    tx_end_line();

    tx_str(EE_MSG_RESULTS_INT8);
    for (i = 0; i < count; ++i) {
        if (i > 0) {
            tx_char(',');
        }
        tx_i32(out[i]);
    }
    tx_str(EE_BRACKET_END);
    tx_end_line();
}

/* One inference on the loaded record. The input is copied into the model's
 * input tensor before EVERY invoke: TensorFlow Lite Micro's memory planner
 * reuses the input tensor's bytes for later tensors, so after one invoke the
 * input is gone, and a second invoke on the same tensor would run on garbage.
 * The copy is counted in the timed interval (one memcpy of the input, e.g.
 * 12,000 bytes: well under 0.1 % of a dscnn inference; see PROTOCOL.md).
 * A run of `infer` that takes longer than EE_INFER_TIME_LIMIT_MS (counted from
 * `since`) is stopped with an error, so a mistyped count cannot hang the
 * device until a reset. Returns 0, or -1 after reporting the error. */
static int invoke_on_loaded_input(int8_t *tensor, size_t bytes, uint32_t since, uint32_t done, uint32_t total) {
    memcpy(tensor, s.input, bytes);
    if (th_model_invoke() != 0) {
        error_line(EE_ERR_INVOKE);
        return -1;
    }
    /* Unsigned difference: correct across the 32-bit wrap. */
    if (done + 1u < total &&
        (uint32_t)(th_timestamp_us() - since) >= (uint32_t)EE_INFER_TIME_LIMIT_MS * 1000u) {
        error_open(EE_ERR_INFER_TIME_LIMIT);
        tx_str(": ");
        tx_u32(done + 1u);
        tx_str(" of ");
        tx_u32(total);
        tx_str(" runs in ");
        tx_u32(EE_INFER_TIME_LIMIT_MS);
        tx_str(" ms");
        error_close();
        return -1;
    }
    return 0;
}

static void cmd_infer(char *tokens[], int count) {
    uint32_t iterations = EE_INFER_DEFAULT_ITERATIONS;
    uint32_t warmup = EE_INFER_DEFAULT_WARMUP;
    uint32_t i;
    uint32_t t0;
    uint32_t t1;
    uint32_t start;
    size_t tensor_bytes = 0;
    int8_t *tensor;

    if (count > 3) {
        error_line(EE_ERR_TOO_MANY_ARGUMENTS);
        return;
    }
    if (parse_count_arg(tokens, count, 1, &iterations) != 0 ||
        parse_count_arg(tokens, count, 2, &warmup) != 0) {
        return;
    }
    if (iterations == 0u) {
        error_line(EE_ERR_INFER_ITERATIONS);
        return;
    }
    if (!s.model_ready) {
        error_line(EE_ERR_MODEL_INIT);
        return;
    }
    if (!load_complete()) {
        error_open(EE_ERR_INPUT_NOT_LOADED);
        tx_str(": ");
        tx_size(s.load_received);
        tx_str(" of ");
        tx_size(s.load_expected);
        tx_str(" bytes");
        error_close();
        return;
    }
    tensor = th_input_tensor(&tensor_bytes);
    if (tensor == NULL || tensor_bytes != s.load_expected) {
        error_open(EE_ERR_INPUT_SIZE);
        tx_str(": loaded ");
        tx_size(s.load_expected);
        tx_str(", model expects ");
        tx_size(tensor_bytes);
        error_close();
        return;
    }
    tx_str(EE_MSG_WARMUP_START);
    tx_u32(warmup);
    tx_end_line();
    start = th_timestamp_us();
    for (i = 0; i < warmup; ++i) {
        if (invoke_on_loaded_input(tensor, tensor_bytes, start, i, warmup) != 0) {
            return;
        }
    }
    tx_line(EE_MSG_WARMUP_DONE);
    tx_str(EE_MSG_INFER_START);
    tx_u32(iterations);
    tx_end_line();

    /* Both timestamps are printed after the loop, so the serial time of
     * printing the first one is not counted in the interval. */
    t0 = th_timestamp_us();
    for (i = 0; i < iterations; ++i) {
        if (invoke_on_loaded_input(tensor, tensor_bytes, t0, i, iterations) != 0) {
            return;
        }
    }
    t1 = th_timestamp_us();
    s.have_results = 1;

    tx_str(EE_MSG_LAP_US);
    tx_u32(t0);
    tx_end_line();
    tx_str(EE_MSG_LAP_US);
    tx_u32(t1);
    tx_end_line();
    tx_line(EE_MSG_INFER_DONE);
    print_results();
}

static void cmd_results(void) {
    if (!s.have_results) {
        error_line(EE_ERR_NO_RESULTS);
        return;
    }
    print_results();
}

static void json_key(const char *key, int first) {
    if (!first) {
        tx_char(',');
    }
    tx_json_string(key);
    tx_char(':');
}

static void cmd_info(void) {
    th_target_info_t info;
    th_quant_params_t in_q = th_input_quant();
    th_quant_params_t out_q = th_output_quant();
    size_t input_bytes = 0;
    size_t output_count = 0;

    memset(&info, 0, sizeof info);
    th_target_info(&info);
    (void)th_input_tensor(&input_bytes);
    (void)th_output_tensor(&output_count);

    tx_str(EE_MSG_INFO);
    tx_char('{');
    json_key("protocol", 1);
    tx_json_string(EE_EXT_PROTOCOL_VERSION);
    json_key("core_version", 0);
    tx_json_string(EE_CORE_VERSION);
    json_key("firmware_version", 0);
    tx_json_string(info.firmware_version);
    json_key("target", 0);
    tx_json_string(info.target_name);
    json_key("model", 0);
    tx_json_string(EE_MODEL_ID);
    json_key("model_hash", 0);
    tx_json_string(info.model_hash);
    json_key("model_ready", 0);
    tx_str(s.model_ready ? "true" : "false");
    json_key("input_shape", 0);
    tx_char('[');
    tx_u32(EE_INPUT_SAMPLES);
    tx_char(',');
    tx_u32(EE_INPUT_LEADS);
    tx_char(']');
    json_key("input_bytes", 0);
    tx_size(input_bytes);
    json_key("load_capacity", 0);
    tx_size(EE_INPUT_BYTES);
    json_key("input_scale", 0);
    tx_float(in_q.scale);
    json_key("input_zero_point", 0);
    tx_i32(in_q.zero_point);
    json_key("output_count", 0);
    tx_size(output_count);
    json_key("output_scale", 0);
    tx_float(out_q.scale);
    json_key("output_zero_point", 0);
    tx_i32(out_q.zero_point);
    json_key("arena_bytes", 0);
    tx_u32(info.arena_bytes);
    json_key("arena_used_bytes", 0);
    tx_u32(info.arena_used_bytes);
    json_key("cpu_hz", 0);
    tx_u32(info.cpu_hz);
    json_key("cmd_size", 0);
    tx_u32(EE_CMD_SIZE);
    json_key("bin_timeout_ms", 0);
    tx_u32(EE_BIN_TIMEOUT_MS);
    json_key("infer_time_limit_ms", 0);
    tx_u32(EE_INFER_TIME_LIMIT_MS);
    tx_char('}');
    tx_str(EE_BRACKET_END);
    tx_end_line();
}

/* Commands that take no arguments share one arity check. */
static int no_arguments(int count) {
    if (count > 1) {
        error_line(EE_ERR_TOO_MANY_ARGUMENTS);
        return 0;
    }
    return 1;
}

static void run_command(char *cmd, size_t len) {
    char *tokens[MAX_TOKENS];
    int count = split_tokens(cmd, len, tokens);

    if (count == 0) {
        /* An empty command only answers m-ready: hosts use it to resync. */
    } else if (count > MAX_TOKENS) {
        error_line(EE_ERR_TOO_MANY_ARGUMENTS);
    } else if (strcmp(tokens[0], EE_CMD_NAME) == 0) {
        if (no_arguments(count)) {
            cmd_name();
        }
    } else if (strcmp(tokens[0], EE_CMD_PROFILE) == 0) {
        if (no_arguments(count)) {
            cmd_profile();
        }
    } else if (strcmp(tokens[0], EE_CMD_TIMESTAMP) == 0) {
        if (no_arguments(count)) {
            cmd_timestamp();
        }
    } else if (strcmp(tokens[0], EE_CMD_HELP) == 0) {
        if (no_arguments(count)) {
            cmd_help();
        }
    } else if (strcmp(tokens[0], EE_CMD_DB) == 0) {
        cmd_db(tokens, count);
    } else if (strcmp(tokens[0], EE_CMD_INFER) == 0) {
        cmd_infer(tokens, count);
    } else if (strcmp(tokens[0], EE_CMD_RESULTS) == 0) {
        if (no_arguments(count)) {
            cmd_results();
        }
    } else if (strcmp(tokens[0], EE_CMD_INFO) == 0) {
        if (no_arguments(count)) {
            cmd_info();
        }
    } else {
        error_open(EE_ERR_UNKNOWN_COMMAND);
        tx_str(": ");
        tx_sanitized(tokens[0]);
        error_close();
    }
    tx_line(EE_MSG_READY);
}

/* ------------------------------------------------------------------------ */
/* Byte intake                                                              */
/* ------------------------------------------------------------------------ */

static void finish_binary_load(void) {
    s.bin_active = 0;
    tx_str(EE_MSG_LOAD_CRC);
    tx_hex32(s.bin_crc);
    tx_end_line();
    tx_line(EE_MSG_LOAD_DONE);
    tx_line(EE_MSG_READY);
}

/* Take up to `count` bytes of a binary load; returns how many were taken. */
static size_t take_binary(const uint8_t *bytes, size_t count) {
    size_t room = s.load_expected - s.load_received;
    size_t n = count < room ? count : room;
    memcpy(&s.input[s.load_received], bytes, n);
    s.bin_crc = ee_crc32_update(s.bin_crc, bytes, n);
    s.load_received += n;
    s.bin_activity = 1;
    if (s.load_received == s.load_expected) {
        finish_binary_load();
    }
    return n;
}

static void take_command_byte(uint8_t byte) {
    char c = (char)byte;
    if (c == EE_CMD_TERMINATOR) {
        if (s.cmd_too_long) {
            error_open(EE_ERR_COMMAND_TOO_LONG);
            tx_str(": max ");
            tx_u32(EE_CMD_SIZE);
            tx_str(" characters");
            error_close();
            tx_line(EE_MSG_READY);
        } else {
            run_command(s.cmd, s.cmd_len);
        }
        s.cmd_len = 0;
        s.cmd_too_long = 0;
    } else if (s.cmd_len < EE_CMD_SIZE) {
        s.cmd[s.cmd_len++] = c;
    } else {
        s.cmd_too_long = 1;
    }
}

void ee_core_rx_bytes(const uint8_t *bytes, size_t count) {
    size_t i = 0;
    while (i < count) {
        if (s.bin_active) {
            i += take_binary(&bytes[i], count - i);
        } else {
            take_command_byte(bytes[i++]);
        }
    }
}

void ee_core_rx_byte(uint8_t byte) {
    ee_core_rx_bytes(&byte, 1);
}

void ee_core_poll(void) {
    uint32_t now;
    if (!s.bin_active) {
        return;
    }
    now = th_timestamp_us();
    if (s.bin_activity) {
        s.bin_activity = 0;
        s.bin_last_activity_us = now;
        return;
    }
    /* Unsigned difference: correct across the 32-bit wrap. */
    if ((uint32_t)(now - s.bin_last_activity_us) >= (uint32_t)EE_BIN_TIMEOUT_MS * 1000u) {
        error_open(EE_ERR_BIN_TIMEOUT);
        tx_str(": received ");
        tx_size(s.load_received);
        tx_str(" of ");
        tx_size(s.load_expected);
        tx_str(" bytes");
        error_close();
        /* The partial input is unusable: forget the load entirely. */
        s.bin_active = 0;
        s.load_expected = 0;
        s.load_received = 0;
        tx_line(EE_MSG_READY);
    }
}

void ee_core_init(void) {
    s.cmd_len = 0;
    s.cmd_too_long = 0;
    s.load_expected = 0;
    s.load_received = 0;
    s.bin_active = 0;
    s.bin_activity = 0;
    s.have_results = 0;
    s.tx_len = 0;

    tx_line(EE_MSG_TIMESTAMP_MODE);
    s.model_ready = th_model_init() == 0;
    if (!s.model_ready) {
        error_line(EE_ERR_MODEL_INIT);
    }
    tx_str(EE_MSG_LAP_US);
    tx_u32(th_timestamp_us());
    tx_end_line();
    tx_line(EE_MSG_INIT_DONE);
    tx_line(EE_MSG_READY);
}
