/* Minimal TAP producer for meson's `protocol: 'tap'` tests. */
#ifndef PGT_TAP_H
#define PGT_TAP_H
#include <stdbool.h>
void tap_ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tap_done(void);
void tap_is_str(const char *got, const char *want, const char *name);
#define TAP_IS_STR(got, want, name) tap_is_str((got), (want), (name))
#endif
