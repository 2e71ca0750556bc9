/*
 * model_config.h - the host port's model description (see core/ee_config.h).
 *
 * The checksum runner has the real model's shapes so that the host exercises
 * exactly the transfers a board does: one 1000 x 12 int8 record in, five
 * int8 scores out. A run's generated model_config.h (edge-ecg export) sets
 * EE_INPUT_LEADS to the run's lead count (--leads: 12, 6, 3, 2, 1 or a list).
 */
#ifndef MODEL_CONFIG_H
#define MODEL_CONFIG_H

#define EE_INPUT_SAMPLES 1000
#define EE_INPUT_LEADS 12
#define EE_OUTPUT_COUNT 5

#endif /* MODEL_CONFIG_H */
