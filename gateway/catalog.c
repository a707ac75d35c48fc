/* catalog.c - placeholder, being written */
