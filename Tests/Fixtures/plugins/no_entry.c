/* A shared object that is not a gatehouse plugin at all. */
int some_other_library_function(void) { return 42; }
