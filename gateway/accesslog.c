/* accesslog.c - placeholder */
