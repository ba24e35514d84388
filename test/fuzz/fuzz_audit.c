/*
 * fuzz_audit: one audit-log line (audit_format) built from hostile field
 * values: the input is cut at '\0' into the record's strings (tenant,
 * user, database, address, reason, command, ...: what clients and tokens
 * choose), and its first bytes give the event, the numbers and the time.
 * Every line must be one line of valid JSON whatever the strings hold
 * (quotes, newlines, bytes that are not UTF-8), which is checked by
 * parsing it back with jansson.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "fuzz_util.h"

#define NSTR 11

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 9)
		return 0;
	uint8_t flags = data[0];
	int64_t num;
	memcpy(&num, data + 1, sizeof(num));
	const uint8_t *p = data + 9, *end = data + size;
	char *str[NSTR];
	for (int i = 0; i < NSTR; i++) {
		const uint8_t *f;
		size_t n = fuzz_field(&p, end, '\0', &f);
		/* a field the flags leave out is NULL: a key that does not apply */
		str[i] = i < 8 && (flags >> i & 1) ? NULL : fuzz_strndup(f, n);
	}
	struct audit_record r = {
	    .event = (enum audit_event)(flags % 5),
	    .conn = (uint64_t)num,
	    .tenant = str[0],
	    .tenant_source = str[1],
	    .user = str[2],
	    .database = str[3],
	    .addr = str[4],
	    .tls = (int)(flags % 3) - 1,
	    .auth = str[5],
	    .jwt_iss = str[6],
	    .jwt_sub = str[7],
	    .reason = str[8],
	    .sqlstate = str[9],
	    .duration_ms = num,
	    .xacts = num >> 8,
	    .bytes_in = num == INT64_MIN ? 0 : -num,
	    .bytes_out = num ^ 0x5555,
	    .command = str[10],
	};
	/* any time, up to the year 9999 (what the timestamp format holds) */
	usec_t now =
	    (usec_t)((uint64_t)num % 253402300799ull) * USEC_PER_SEC + (usec_t)((uint64_t)num % 1000000);
	char *line = audit_format(&r, now);
	if (line) {
		size_t n = strlen(line);
		if (n == 0 || line[n - 1] != '\n' || memchr(line, '\n', n - 1))
			abort(); /* one line, ending with its newline */
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		if (!o || !json_is_object(o))
			abort(); /* every line parses */
		json_decref(o);
		free(line);
	}
	for (int i = 0; i < NSTR; i++)
		free(str[i]);
	return 0;
}
