/* Minimal TAP producer for meson's `protocol: 'tap'` tests. */
#ifndef PGT_TAP_H
#define PGT_TAP_H
#include <stdbool.h>
void tap_ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tap_done(void);
#define TAP_IS_STR(got, want, name) \
	tap_ok((got) && (want) && strcmp((got), (want)) == 0, "%s (got \"%s\", want \"%s\")", name, (got) ? (got) : "(null)", (want) ? (want) : "(null)")
#endif
