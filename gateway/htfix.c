/* htfix.c - placeholder */
