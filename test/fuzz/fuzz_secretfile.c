/*
 * fuzz_secretfile: the contents of a mounted secret (server_password_file,
 * password_file=): a JSON object with "password" and "username" when the
 * first non-blank byte is '{', else the first line.  secretfile_parse gets
 * exactly the file's bytes, with no terminator after them, as it does
 * from secretfile_read.  What it accepts has a non-empty password, and an
 * error never quotes the contents.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "secretfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pgt_secret s;
	char err[256] = "";
	if (secretfile_parse((const char *)data, size, &s, err, sizeof(err))) {
		if (!s.password || !s.password[0])
			abort();
		secretfile_clear(&s);
	} else if (!err[0]) {
		abort(); /* a refusal says why */
	}
	return 0;
}
