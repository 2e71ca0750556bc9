/*
 * tflm_mps2.c - the mps2-an386 board (../main.c, ../board.c, ../startup.c and
 * the firmware core) with TensorFlow Lite Micro instead of the AOT model: the
 * ESP32 port's own runner, firmware/esp32/main/tflm_runner.cc, supplies the
 * model hooks; this file supplies the target facts of `info%` (what
 * firmware/host/aot_model.c does for the AOT board).
 *
 * Not part of the AOT board (build_qemu_board and the Makefile compile
 * the board folder's own C files only): edge_ecg.bench.tflm_qemu builds it, against a TFLM tree the
 * user supplies, with TFLM's reference kernels or with CMSIS-NN
 * (-DEE_MPS2_TFLM_KERNELS="reference" or "cmsis_nn"). The arena comes from
 * heap_caps_aligned_alloc of tflm/esp_heap_caps.h (newlib's heap); `info%` reports its
 * size and the bytes TFLM really uses after AllocateTensors().
 */
#include "ee_core.h"
#include "model_config.h"
#include "model_runner.h"
#include "th_hooks.h"

#ifndef EE_MPS2_TFLM_KERNELS
#error "define EE_MPS2_TFLM_KERNELS as \"reference\" or \"cmsis_nn\" (the TFLM kernels linked)"
#endif

#define EE_MPS2_TFLM_TARGET "mps2-an386-tflm"

void th_target_info(th_target_info_t *info) {
    info->target_name = EE_MPS2_TFLM_TARGET;
    info->firmware_version = EE_MPS2_TFLM_TARGET "-" EE_CORE_VERSION "+" EE_MPS2_TFLM_KERNELS;
    info->model_hash = ECG_MODEL_SHA256;
    info->cpu_hz = 25000000u; /* SYSCLK, as the AOT board */
    info->arena_bytes = (uint32_t)model_runner_arena_bytes();
    info->arena_used_bytes = (uint32_t)model_runner_arena_used_bytes();
}
