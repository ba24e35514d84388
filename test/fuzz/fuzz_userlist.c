/*
 * fuzz_userlist: auth_file in PgBouncer's userlist.txt format (quoted
 * fields with doubled quotes, comments, md5 and SCRAM entries) through
 * userlist_parse, then every entry looked up again by name, and the SCRAM
 * secret a login would be checked against for each SCRAM entry and for a
 * name that is not in the list (userlist_scram_secret: the entry's secret
 * parsed, or the mock one).  Plain-text entries are not asked for theirs:
 * that is one PBKDF2 per entry, slow and not a parser.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "scram.h"
#include "userlist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_strndup(data, size);
	struct pgt_userlist ul = {0};
	int errline = 0;
	char err[256] = "";
	if (userlist_parse(text, &ul, &errline, err, sizeof(err))) {
		for (int i = 0; i < ul.n; i++) {
			const struct pgt_user *u = userlist_find(&ul, ul.users[i].name);
			if (!u || strcmp(u->name, ul.users[i].name) != 0)
				abort(); /* every entry is found by its name */
			struct scram_secret s;
			if (strncmp(u->password, "SCRAM-SHA-256$", 14) == 0)
				if (!userlist_scram_secret(&ul, u->name, &s))
					abort(); /* a parsed or a mock secret, always */
		}
		struct scram_secret s;
		if (!userlist_find(&ul, "fuzz-nobody"))
			if (!userlist_scram_secret(&ul, "fuzz-nobody", &s))
				abort();
		userlist_free(&ul);
	} else if (!err[0]) {
		abort(); /* an error says what */
	}
	free(text);
	return 0;
}
