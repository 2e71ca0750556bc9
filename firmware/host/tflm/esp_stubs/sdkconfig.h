/*
 * sdkconfig.h - host stand-in for the header ESP-IDF generates from Kconfig.
 * tflm_runner.cc reads only CONFIG_ECG_ARENA_INTERNAL_FIRST, left undefined
 * (PSRAM first, the default); the host has no PSRAM, so the arena lands on
 * the heap either way.
 */
#ifndef EE_HOST_SDKCONFIG_H
#define EE_HOST_SDKCONFIG_H

#define CONFIG_IDF_TARGET "host"

#endif /* EE_HOST_SDKCONFIG_H */
