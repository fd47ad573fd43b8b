// The receive reactor's interface to Go (reactor_linux.c, reactor_linux.go).
#include <stddef.h>
#include <stdint.h>

#define LEM_EOF (-1000000)
#define LEM_NEWS_READ 0ULL
#define LEM_NEWS_SENT 1ULL

struct lem_conn;
int lem_reactor_start(int notify_fd);
struct lem_conn *lem_conn_open(int fd, uint32_t id, size_t cap, int *errp);
long lem_conn_read(struct lem_conn *c, char *p, size_t len, int64_t *ts);
void lem_conn_close(struct lem_conn *c);
int lem_reactor_take(uint64_t *news, int max);
int lem_send_at(struct lem_conn *c, const char *p, size_t len, int64_t delay_ns);
long lem_conn_send_result(struct lem_conn *c, int *err);
