/*
 * ee_protocol.h - every string and number that travels on the serial link.
 *
 * This header is the single source of truth for the wire protocol spoken by
 * the edge-ecg firmware core: the MLPerf Tiny / EEMBC benchmark commands and
 * the edge-ecg extensions (see PROTOCOL.md beside this file).
 *
 * The Python host (edge_ecg/bench/protocol.py) mirrors these values and a test
 * parses this file to check that the two agree. Keep every definition on one
 * line, of the form `#define EE_NAME <literal>`, where the literal is a single
 * string, a single character or a decimal integer: that is all the parser
 * accepts.
 */
#ifndef EE_PROTOCOL_H
#define EE_PROTOCOL_H

/* ---- Versions ----------------------------------------------------------- */

/* Version of the edge-ecg core (this folder), reported by `info%`. */
#define EE_CORE_VERSION "0.1.0"
/* Version of the edge-ecg protocol extensions, reported by `info%`. */
#define EE_EXT_PROTOCOL_VERSION "edge-ecg/1"

/* ---- Framing -------------------------------------------------------------- */

/* Every command ends with this character; nothing else is needed. */
#define EE_CMD_TERMINATOR '%'
/* Tokens of a command are separated by this character. */
#define EE_CMD_DELIMITER ' '
/* Longest command, in characters, not counting the terminator. */
#define EE_CMD_SIZE 80
/* Every line the device prints ends with this. */
#define EE_LINE_END "\r\n"
/* Prefix of an informational or result line. */
#define EE_MSG_PREFIX "m-"
/* Prefix of an error line; the text follows in brackets: e-[...]. */
#define EE_ERR_PREFIX "e-"

/* ---- Identity ------------------------------------------------------------- */

/* The MLPerf Tiny role of this firmware: device under test. */
#define EE_DEVICE_NAME "dut"
/* Printed by `profile%`; the MLPerf Tiny reference firmware's string. */
#define EE_PROFILE_STRING "ULPMark for tinyML Firmware V0.0.1"
/* Printed by `profile%` as m-model-[...]: the edge-ecg 12-lead ECG model. */
#define EE_MODEL_ID "ecg01"

/* ---- Commands (MLPerf Tiny) ----------------------------------------------- */

#define EE_CMD_NAME "name"
#define EE_CMD_PROFILE "profile"
#define EE_CMD_HELP "help"
#define EE_CMD_TIMESTAMP "timestamp"
#define EE_CMD_DB "db"
#define EE_CMD_DB_LOAD "load"
#define EE_CMD_INFER "infer"
#define EE_CMD_RESULTS "results"
/* `infer` without arguments: one timed inference after ten warm-ups. */
#define EE_INFER_DEFAULT_ITERATIONS 1
#define EE_INFER_DEFAULT_WARMUP 10

/* ---- Commands (edge-ecg extensions) --------------------------------------- */

#define EE_CMD_INFO "info"
/* `db bin N%`: the next N bytes on the link are raw input bytes. */
#define EE_CMD_DB_BIN "bin"
/* A binary load that receives nothing for this long is abandoned. */
#define EE_BIN_TIMEOUT_MS 500

/* ---- Messages (MLPerf Tiny) ----------------------------------------------- */

#define EE_MSG_READY "m-ready"
#define EE_MSG_INIT_DONE "m-init-done"
#define EE_MSG_TIMESTAMP_MODE "m-timestamp-mode-performance"
/* Followed by a decimal microsecond count (32 bits, wraps). */
#define EE_MSG_LAP_US "m-lap-us-"
/* m-name-dut-[<target name>] */
#define EE_MSG_NAME "m-name-dut-["
/* m-profile-[<EE_PROFILE_STRING>] then m-model-[<EE_MODEL_ID>] */
#define EE_MSG_PROFILE "m-profile-["
#define EE_MSG_MODEL "m-model-["
/* m-[Expecting N bytes] */
#define EE_MSG_EXPECTING "m-[Expecting "
#define EE_MSG_EXPECTING_END " bytes]"
#define EE_MSG_LOAD_DONE "m-load-done"
#define EE_MSG_WARMUP_START "m-warmup-start-"
#define EE_MSG_WARMUP_DONE "m-warmup-done"
#define EE_MSG_INFER_START "m-infer-start-"
#define EE_MSG_INFER_DONE "m-infer-done"
/* m-results-[v0,v1,...]: dequantized outputs, 9 significant digits */
#define EE_MSG_RESULTS "m-results-["
/* One line per help entry. */
#define EE_MSG_HELP "m-help-"
/* Closes every bracketed message and error. */
#define EE_BRACKET_END "]"

/* ---- Messages (edge-ecg extensions) --------------------------------------- */

/* m-results-int8-[q0,q1,...]: the raw int8 outputs, after m-results-[...] */
#define EE_MSG_RESULTS_INT8 "m-results-int8-["
/* m-info-[{...}]: one JSON object, see PROTOCOL.md for the keys */
#define EE_MSG_INFO "m-info-["
/* m-load-crc-xxxxxxxx: CRC-32 (zlib) of a binary load, 8 lowercase hex */
#define EE_MSG_LOAD_CRC "m-load-crc-"

/* ---- Errors: e-[<text>] or e-[<text>: <detail>] ---------------------------- */

#define EE_ERR_OPEN "e-["
#define EE_ERR_UNKNOWN_COMMAND "Unknown command"
#define EE_ERR_COMMAND_TOO_LONG "Command too long"
#define EE_ERR_TOO_MANY_ARGUMENTS "Too many arguments"
#define EE_ERR_BAD_NUMBER "Invalid number"
#define EE_ERR_DB_SUBCOMMAND "Command 'db' requires a subcommand"
#define EE_ERR_LOAD_SIZE "Load size out of range"
#define EE_ERR_NO_LOAD "No load in progress"
#define EE_ERR_HEX_ODD "Odd number of hex digits"
#define EE_ERR_HEX_DIGIT "Invalid hex digit"
#define EE_ERR_LOAD_OVERFLOW "More bytes than announced"
#define EE_ERR_INPUT_NOT_LOADED "Input not loaded"
#define EE_ERR_INPUT_SIZE "Input size mismatch"
#define EE_ERR_INFER_ITERATIONS "Inference iterations must be >0"
#define EE_ERR_INFER_TIME_LIMIT "Inference time limit exceeded"
#define EE_ERR_MODEL_INIT "Model init failed"
#define EE_ERR_INVOKE "Inference failed"
#define EE_ERR_NO_RESULTS "No results: run infer first"
#define EE_ERR_BIN_TIMEOUT "Binary load timed out"

#endif /* EE_PROTOCOL_H */
