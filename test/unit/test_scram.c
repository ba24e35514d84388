#include "tap.h"
int main(void){tap_ok(1,"x");return tap_done();}
