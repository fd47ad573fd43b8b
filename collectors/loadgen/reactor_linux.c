//go:build linux && cgo

// The receive reactor: one thread of its own, outside Go's scheduler,
// reads every registered connection as soon as the kernel says it is
// readable and keeps each read's bytes with the kernel's receive time
// (SO_TIMESTAMPNS). Linux merges a segment that arrives behind unread data
// into it, with the newer time, so a reader that falls more than a segment
// behind on a connection loses the earlier segment's time; this thread
// only copies bytes, so it stays within a segment of each stream while the
// Go side parses at its own pace. See reactor_linux.go.

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "reactor_linux.h"

enum { MARKS = 512 };

struct lem_conn {
	int fd;
	uint32_t id;
	pthread_mutex_t mu;
	char *buf;
	size_t cap;
	uint64_t received, consumed; // bytes, since the connection opened
	// One mark per read still (partly) unconsumed: where it ends and the
	// kernel's receive time of its last segment.
	uint64_t mend[MARKS];
	int64_t mts[MARKS];
	int mhead, mcount;
	int eof, err, paused;
	// The result of a timed send (lem_send_at), once done.
	long sent;
	int send_err;
};

static int epfd = -1, notify_w = -1;
// The table. The receive loop (over each batch of events) and the send
// thread (around each send) hold it shared: neither waits for the other
// (the send thread must not wait milliseconds for a batch); opening and
// closing a connection hold it exclusively, so a descriptor is never read
// or written after it left.
static pthread_rwlock_t tlock = PTHREAD_RWLOCK_INITIALIZER;
static struct lem_conn **table;                          // by fd
static int tcap;
static pthread_mutex_t dmu = PTHREAD_MUTEX_INITIALIZER; // the ready list
static uint64_t *ready;                                  // connection id | kind << 32
static int nready, capready;

// push appends news of kind for id to the ready list; it reports whether
// the list was empty (the Go side must then be woken).
static int push(uint32_t id, uint64_t kind) {
	int wake = 0;
	pthread_mutex_lock(&dmu);
	if (nready == capready) {
		int nc = capready ? 2 * capready : 1024;
		uint64_t *r = realloc(ready, (size_t)nc * sizeof *r);
		if (!r) {
			pthread_mutex_unlock(&dmu);
			return 0;
		}
		ready = r;
		capready = nc;
	}
	wake = nready == 0;
	ready[nready++] = (uint64_t)id | kind << 32;
	pthread_mutex_unlock(&dmu);
	return wake;
}

static void wake_go(void) {
	char b = 1;
	ssize_t w = write(notify_w, &b, 1); // full pipe: a wake-up is pending anyway
	(void)w;
}

static int64_t receive_time(struct msghdr *m) {
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
		    c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
			struct timespec ts;
			memcpy(&ts, CMSG_DATA(c), sizeof ts);
			return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
		}
	}
	return 0;
}

// pump reads c until the kernel has nothing more, its buffer is full, or
// it ends; it reports whether there is news for the Go side.
static int pump(struct lem_conn *c) {
	int news = 0;
	pthread_mutex_lock(&c->mu);
	while (!c->eof && !c->err) {
		size_t used = (size_t)(c->received - c->consumed);
		if (used == c->cap || c->mcount == MARKS) {
			c->paused = 1;
			break;
		}
		size_t at = (size_t)(c->received % c->cap);
		size_t room = c->cap - at;
		if (room > c->cap - used)
			room = c->cap - used;
		struct iovec iov = {c->buf + at, room};
		char ctrl[256];
		struct msghdr m;
		memset(&m, 0, sizeof m);
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = ctrl;
		m.msg_controllen = sizeof ctrl;
		ssize_t n = recvmsg(c->fd, &m, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				c->err = errno;
				news = 1;
			}
			break;
		}
		news = 1;
		if (n == 0) {
			c->eof = 1;
			break;
		}
		int k = (c->mhead + c->mcount) % MARKS;
		c->received += (uint64_t)n;
		c->mend[k] = c->received;
		c->mts[k] = receive_time(&m);
		c->mcount++;
	}
	pthread_mutex_unlock(&c->mu);
	return news;
}

static void *loop(void *arg) {
	(void)arg;
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(epfd, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		int wake = 0;
		pthread_rwlock_rdlock(&tlock);
		for (int i = 0; i < n; i++) {
			int fd = (int)(evs[i].data.u64 & 0xffffffffu);
			uint32_t id = (uint32_t)(evs[i].data.u64 >> 32);
			struct lem_conn *c = fd < tcap ? table[fd] : NULL;
			if (!c || c->id != id || !pump(c))
				continue;
			wake |= push(c->id, LEM_NEWS_READ);
		}
		pthread_rwlock_unlock(&tlock);
		if (wake)
			wake_go();
	}
	return NULL;
}

// Timed sends: a second thread writes a request at its deadline, so when
// it leaves does not depend on when a goroutine gets to run either.
struct timed {
	uint32_t id;
	int fd;
	char *buf;
	size_t len;
	int64_t at; // CLOCK_MONOTONIC, ns
};
static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t scond;
static struct timed *sq;
static int nsq, capsq;

enum { SPIN_NS = 50000 }; // sleep to within 50 µs of a deadline, then spin


static int64_t mono_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *sender(void *arg) {
	(void)arg;
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); // wake-ups to the microsecond
	// Real-time priority where allowed (root or CAP_SYS_NICE), so that a
	// wake-up at a deadline does not wait for other threads' time slices;
	// it spins at most SPIN_NS per send (10% of a core at 2,000 sends/s).
	// Refused: it runs as any thread.
	struct sched_param sp = {.sched_priority = 1};
	(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	pthread_mutex_lock(&smu);
	for (;;) {
		if (nsq == 0) {
			pthread_cond_wait(&scond, &smu);
			continue;
		}
		int k = 0;
		for (int i = 1; i < nsq; i++)
			if (sq[i].at < sq[k].at)
				k = i;
		int64_t left = sq[k].at - mono_ns();
		if (left > SPIN_NS) {
			int64_t w = sq[k].at - SPIN_NS;
			struct timespec ts = {(time_t)(w / 1000000000), (long)(w % 1000000000)};
			pthread_cond_timedwait(&scond, &smu, &ts); // an earlier one may come
			continue;
		}
		struct timed t = sq[k];
		sq[k] = sq[--nsq];
		pthread_mutex_unlock(&smu);
		while (mono_ns() < t.at)
			;
		int wake = 0;
		pthread_rwlock_rdlock(&tlock);
		struct lem_conn *c = t.fd < tcap ? table[t.fd] : NULL;
		if (c && c->id == t.id) { // not closed meanwhile
			ssize_t n;
			do
				n = send(t.fd, t.buf, t.len, MSG_DONTWAIT | MSG_NOSIGNAL);
			while (n < 0 && errno == EINTR);
			c->sent = n < 0 ? 0 : n;
			c->send_err = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK ? errno : 0;
			wake = push(t.id, LEM_NEWS_SENT);
		}
		pthread_rwlock_unlock(&tlock);
		free(t.buf);
		if (wake)
			wake_go();
		pthread_mutex_lock(&smu);
	}
	return NULL;
}

int lem_send_at(struct lem_conn *c, const char *p, size_t len, int64_t delay_ns) {
	char *b = malloc(len);
	if (!b)
		return -ENOMEM;
	memcpy(b, p, len);
	pthread_mutex_lock(&smu);
	if (nsq == capsq) {
		int nc = capsq ? 2 * capsq : 64;
		struct timed *q = realloc(sq, (size_t)nc * sizeof *q);
		if (!q) {
			pthread_mutex_unlock(&smu);
			free(b);
			return -ENOMEM;
		}
		sq = q;
		capsq = nc;
	}
	sq[nsq++] = (struct timed){c->id, c->fd, b, len, mono_ns() + delay_ns};
	pthread_cond_signal(&scond);
	pthread_mutex_unlock(&smu);
	return 0;
}

long lem_conn_send_result(struct lem_conn *c, int *err) {
	*err = c->send_err;
	return c->sent;
}

// drop_sends forgets the timed sends of a connection being closed.
static void drop_sends(uint32_t id) {
	pthread_mutex_lock(&smu);
	for (int i = 0; i < nsq;)
		if (sq[i].id == id) {
			free(sq[i].buf);
			sq[i] = sq[--nsq];
		} else
			i++;
	pthread_mutex_unlock(&smu);
}

int lem_reactor_start(int notify_fd) {
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		return -errno;
	notify_w = notify_fd;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&scond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int e = pthread_create(&t, &a, loop, NULL);
	if (e == 0)
		e = pthread_create(&t, &a, sender, NULL);
	pthread_attr_destroy(&a);
	if (e != 0) {
		close(epfd);
		epfd = -1;
		return -e;
	}
	return 0;
}

static int arm(struct lem_conn *c, int op) {
	struct epoll_event ev;
	memset(&ev, 0, sizeof ev);
	ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
	ev.data.u64 = ((uint64_t)c->id << 32) | (uint32_t)c->fd;
	return epoll_ctl(epfd, op, c->fd, &ev) == 0 ? 0 : -errno;
}

struct lem_conn *lem_conn_open(int fd, uint32_t id, size_t cap, int *errp) {
	struct lem_conn *c = calloc(1, sizeof *c);
	if (!c || !(c->buf = malloc(cap))) {
		free(c);
		*errp = -ENOMEM;
		return NULL;
	}
	c->fd = fd;
	c->id = id;
	c->cap = cap;
	pthread_mutex_init(&c->mu, NULL);
	pthread_rwlock_wrlock(&tlock);
	if (fd >= tcap) {
		int nc = tcap ? tcap : 1024;
		while (nc <= fd)
			nc *= 2;
		struct lem_conn **t = realloc(table, (size_t)nc * sizeof *t);
		if (!t) {
			pthread_rwlock_unlock(&tlock);
			free(c->buf);
			free(c);
			*errp = -ENOMEM;
			return NULL;
		}
		memset(t + tcap, 0, (size_t)(nc - tcap) * sizeof *t);
		table = t;
		tcap = nc;
	}
	table[fd] = c;
	int e = arm(c, EPOLL_CTL_ADD);
	if (e != 0)
		table[fd] = NULL;
	pthread_rwlock_unlock(&tlock);
	if (e != 0) {
		free(c->buf);
		free(c);
		*errp = e;
		return NULL;
	}
	return c;
}

long lem_conn_read(struct lem_conn *c, char *p, size_t len, int64_t *ts) {
	long r;
	int resume = 0;
	pthread_mutex_lock(&c->mu);
	if (c->received == c->consumed) {
		r = c->err ? -c->err : c->eof ? LEM_EOF : 0;
		pthread_mutex_unlock(&c->mu);
		return r;
	}
	// Up to the end of the oldest read: one Go read, one kernel read.
	size_t n = (size_t)(c->mend[c->mhead] - c->consumed);
	if (n > len)
		n = len;
	size_t at = (size_t)(c->consumed % c->cap);
	size_t first = c->cap - at < n ? c->cap - at : n;
	memcpy(p, c->buf + at, first);
	memcpy(p + first, c->buf, n - first);
	c->consumed += n;
	*ts = c->mts[c->mhead];
	if (c->consumed == c->mend[c->mhead]) {
		c->mhead = (c->mhead + 1) % MARKS;
		c->mcount--;
	}
	if (c->paused) {
		c->paused = 0;
		resume = 1;
	}
	r = (long)n;
	pthread_mutex_unlock(&c->mu);
	if (resume)
		arm(c, EPOLL_CTL_MOD); // edge-triggered: re-arming reports data still waiting
	return r;
}

void lem_conn_close(struct lem_conn *c) {
	drop_sends(c->id);
	pthread_rwlock_wrlock(&tlock);
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->fd < tcap && table[c->fd] == c)
		table[c->fd] = NULL;
	pthread_rwlock_unlock(&tlock);
	pthread_mutex_destroy(&c->mu);
	free(c->buf);
	free(c);
}

int lem_reactor_take(uint64_t *ids, int max) {
	pthread_mutex_lock(&dmu);
	int n = nready < max ? nready : max;
	memcpy(ids, ready, (size_t)n * sizeof *ids);
	memmove(ready, ready + n, (size_t)(nready - n) * sizeof *ids);
	nready -= n;
	pthread_mutex_unlock(&dmu);
	return n;
}
