/* Minimal TAP producer: "ok N - name" lines and a trailing plan. */
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int n, failed;

void tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;
	n++;
	if (!cond)
		failed++;
	printf("%s %d - ", cond ? "ok" : "not ok", n);
	/* A name may quote an error message of several lines; a raw newline would
	 * start a line that is not TAP, which meson reports as an error. */
	char name[4096];
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	for (const char *c = name; *c; c++) {
		if (*c == '\n')
			fputs("\\n", stdout);
		else if (*c == '\r')
			fputs("\\r", stdout);
		else
			putchar(*c);
	}
	printf("\n");
}

int tap_done(void)
{
	printf("1..%d\n", n);
	return failed ? 1 : 0;
}

void tap_is_str(const char *got, const char *want, const char *name)
{
	tap_ok(got && want && strcmp(got, want) == 0, "%s (got \"%s\", want \"%s\")", name,
	       got ? got : "(null)", want ? want : "(null)");
}
