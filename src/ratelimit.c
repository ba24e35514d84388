/*
 * Per-tenant transaction rate limits (see ratelimit.h).
 *
 * The bucket is a single time per tenant (GCRA), so that charging a
 * transaction is a compare and an add, and a tenant without a limit pays one
 * test of its rate.  Times are in nanoseconds: an interval of 1/rate seconds
 * must stay exact at rates of a million a second.
 *
 * A queued client is granted by its tenant's timer, armed for the moment the
 * bucket allows the queue's head; the grant takes the token for it, marks it
 * (rate_granted) and resumes its held message, which then goes on as if it
 * had been admitted straight away.
 */
#include "ratelimit.h"

#include <event2/event.h>

#include "config.h"
#include "janitor.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "sbuf.h"

#define NSEC_PER_SEC 1000000000ll

/* tenants whose queue is not empty (query_wait_timeout is checked on them) */
static struct list throttling = {&throttling, &throttling};

static int64_t now_ns(void)
{
	return (int64_t)loop_now() * 1000;
}

/* how far ahead of now the bucket's time may be for one more transaction */
static int64_t tolerance(const struct pgt_tenant_state *t)
{
	return (int64_t)(t->xburst - 1) * t->interval_ns;
}

static void serve(struct pgt_tenant_state *t);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	serve(arg);
}

static void arm(struct pgt_tenant_state *t, int64_t delay_ns)
{
	if (!t->throttle_ev)
		t->throttle_ev = event_new(pgt.base, -1, 0, timer_cb, t);
	int64_t us = (delay_ns + 999) / 1000;
	struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
	if (!t->throttle_ev || event_add(t->throttle_ev, &tv) != 0)
		log_error("tenant \"%s\": cannot arm the rate limit timer", t->id);
}

static struct pgt_client *dequeue(struct pgt_tenant_state *t)
{
	struct pgt_client *c = t->throttle_head;
	t->throttle_head = c->throttle_next;
	if (!t->throttle_head) {
		t->throttle_tail = NULL;
		list_del(&t->throttling_node);
	}
	c->throttle_next = NULL;
	c->throttled = false;
	t->nthrottled--;
	return c;
}

/* Grant the queue's head as many tokens as the bucket holds (all of them if
 * the limit was lifted); re-arm for the next. */
static void serve(struct pgt_tenant_state *t)
{
	int64_t now = now_ns();
	while (t->throttle_head) {
		if (t->xrate) {
			/* with a backlog the bucket runs on its own schedule: a timer
			 * that fired late may catch up one interval, not more */
			if (t->tat_ns < now - t->interval_ns)
				t->tat_ns = now - t->interval_ns;
			if (t->tat_ns - now > tolerance(t)) {
				arm(t, t->tat_ns - tolerance(t) - now);
				return;
			}
			t->tat_ns += t->interval_ns;
		}
		struct pgt_client *c = dequeue(t);
		c->rate_granted = t->xrate != 0;
		t->throttle_wait += loop_now() - c->wait_start;
		sbuf_resume(&c->conn); /* may close c; it is off the queue already */
	}
}

bool rate_admit(struct pgt_client *c)
{
	if (c->rate_granted) {
		c->rate_granted = false;
		return true;
	}
	struct pgt_tenant_state *t = c->tstate;
	int64_t now = now_ns();
	if (!t->throttle_head) {
		if (t->tat_ns < now)
			t->tat_ns = now; /* the bucket is full */
		if (t->tat_ns - now <= tolerance(t)) {
			t->tat_ns += t->interval_ns;
			return true;
		}
	}
	/* FIFO within the tenant: nobody overtakes a queued client */
	janitor_wake(); /* query_wait_timeout */
	c->throttled = true;
	c->throttle_next = NULL;
	c->wait_start = loop_now();
	t->throttled_total++;
	t->nthrottled++;
	if (t->throttle_tail) {
		t->throttle_tail->throttle_next = c;
	} else {
		t->throttle_head = c;
		list_append(&throttling, &t->throttling_node);
		arm(t, t->tat_ns - tolerance(t) - now);
	}
	t->throttle_tail = c;
	return false;
}

void rate_refresh(struct pgt_tenant_state *t)
{
	const struct pgt_config *cfg = pgt.cfg;
	const struct pgt_tenant_conf *tc = config_find_tenant(cfg, t->id);
	int rate = cfg->tenant_xact_rate;
	if (tc && tc->xact_rate >= 0)
		rate = tc->xact_rate;
	else if (!tc && t->reg_known && t->reg_found && t->reg_xact_rate >= 0)
		rate = t->reg_xact_rate;
	int burst = rate == 0 ? 0 : cfg->tenant_xact_burst > 0 ? cfg->tenant_xact_burst : rate;
	if (rate == t->xrate && burst == t->xburst)
		return;
	int64_t now = now_ns(), interval = rate ? PGT_MAX(1, NSEC_PER_SEC / rate) : 0;
	if (rate && t->xrate) {
		/* what was used of the bucket stays used, in tokens of the new rate */
		int64_t owed = PGT_MAX(0, t->tat_ns - now);
		owed = (int64_t)((double)owed / (double)t->interval_ns * (double)interval);
		t->tat_ns = now + PGT_MIN(owed, (int64_t)burst * interval);
	} else {
		t->tat_ns = now; /* a new limit starts with a full bucket */
	}
	if (rate != t->xrate)
		log_info("tenant \"%s\": xact_rate %d/s, burst %d", t->id, rate, burst);
	t->xrate = rate;
	t->xburst = burst;
	t->interval_ns = interval;
	if (t->throttle_head) {
		if (t->throttle_ev)
			event_del(t->throttle_ev);
		serve(t);
	}
}

void rate_forget_client(struct pgt_client *c)
{
	if (!c->throttled)
		return;
	struct pgt_tenant_state *t = c->tstate;
	struct pgt_client **pp = &t->throttle_head, *prev = NULL;
	while (*pp != c) {
		prev = *pp;
		pp = &(*pp)->throttle_next;
	}
	*pp = c->throttle_next;
	if (t->throttle_tail == c)
		t->throttle_tail = prev;
	c->throttle_next = NULL;
	c->throttled = false;
	t->nthrottled--;
	t->throttle_wait += loop_now() - c->wait_start;
	if (!t->throttle_head) {
		list_del(&t->throttling_node);
		if (t->throttle_ev)
			event_del(t->throttle_ev);
	}
}

bool rate_expire(usec_t now)
{
	usec_t limit = pgt.cfg->query_wait_timeout;
	if (limit <= 0)
		return !list_empty(&throttling);
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &throttling) {
		struct pgt_tenant_state *t = container_of(i, struct pgt_tenant_state, throttling_node);
		/* the queue is in order of arrival: its head waited longest */
		while (t->throttle_head && now - t->throttle_head->wait_start > limit) {
			metrics_refused(REFUSAL_WAIT_TIMEOUT);
			client_fail(t->throttle_head, "08P01",
			            "query_wait_timeout (waited too long behind the tenant's xact_rate of "
			            "%d transactions per second)",
			            t->xrate);
		}
	}
	return !list_empty(&throttling);
}

void rate_state_free(struct pgt_tenant_state *t)
{
	if (t->throttle_ev)
		event_free(t->throttle_ev);
	t->throttle_ev = NULL;
}

long rate_tokens(const struct pgt_tenant_state *t)
{
	if (!t->xrate)
		return 0;
	int64_t owed = t->tat_ns - now_ns();
	if (owed <= 0)
		return t->xburst;
	return PGT_MAX(0, ((int64_t)t->xburst * t->interval_ns - owed) / t->interval_ns);
}
