/*
 * port_model.h - what a port's platform code (main.c) and its model hooks
 * (checksum_model.c, aot_model.c) share, so one main links either model.
 */
#ifndef PORT_MODEL_H
#define PORT_MODEL_H

/* Fault injection for tests of the error paths, set by the port's main
 * (host: --fail-init, --fail-invoke; 0 on boards): nonzero makes
 * th_model_init() / th_model_invoke() fail. */
extern int ee_port_fail_init;
extern int ee_port_fail_invoke;

/* One line saying what the model is, for usage texts. */
extern const char ee_host_model_description[];

#endif /* PORT_MODEL_H */
