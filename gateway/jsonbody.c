/* jsonbody.c - placeholder, being written */
