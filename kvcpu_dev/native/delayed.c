/* Replies held back by an injected latency.
 *
 * A fault rule's latency delays the reply of the request it fired on, and
 * nothing else: the command has run (or failed) under the lock already, so
 * the session thread hands the reply to this module and goes on serving
 * other clients.  One thread sends each held reply when it is due; at stop
 * every held reply goes out at once, so a stop never waits for a latency.
 * libfuse lets any thread reply to a request.
 *
 * The count of held replies and when the last is due are published in the
 * shared page (struct kv_shared), so that the helper's request timeout can
 * tell an injected latency from a daemon that stopped answering.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


struct kv_delayed {
    struct kv_delayed *next;
    uint64_t due_ns;
    fuse_req_t req;
    int err;
    size_t outsz;
    uint8_t out[sizeof(struct kv_cpu_telemetry_info)];
};

void kv_reply(fuse_req_t req, int err, const uint8_t *out, size_t outsz)
{
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_ioctl(req, 0, outsz ? out : NULL, outsz);
}

void kv_shared_note(struct kv_dev *d)
{
    uint64_t due = 0;

    if (d->shared == NULL)
        return;
    for (struct kv_delayed *e = d->delayed; e != NULL; e = e->next)
        due = e->due_ns;    /* the list is by due time: the last is the latest */
    __atomic_store_n(&d->shared->delayed_due_ns, due, __ATOMIC_RELAXED);
    __atomic_store_n(&d->shared->delayed, d->ndelayed, __ATOMIC_RELEASE);
}

static void *send_when_due(void *arg)
{
    struct kv_dev *d = arg;

    pthread_mutex_lock(&d->delay_lock);
    for (;;) {
        struct kv_delayed *e = d->delayed;

        if (e == NULL) {
            if (d->delay_stop)
                break;
            pthread_cond_wait(&d->delay_cond, &d->delay_lock);
            continue;
        }
        if (!d->delay_stop && kv_now_ns() < e->due_ns) {
            struct timespec until = { .tv_sec = e->due_ns / 1000000000u,
                                      .tv_nsec = e->due_ns % 1000000000u };

            pthread_cond_timedwait(&d->delay_cond, &d->delay_lock, &until);
            continue;
        }
        d->delayed = e->next;
        d->ndelayed--;
        kv_shared_note(d);
        pthread_mutex_unlock(&d->delay_lock);
        kv_reply(e->req, e->err, e->out, e->outsz);
        free(e);
        pthread_mutex_lock(&d->delay_lock);
    }
    pthread_mutex_unlock(&d->delay_lock);
    return NULL;
}

void kv_delayed_init(struct kv_dev *d)
{
    pthread_condattr_t attr;

    pthread_mutex_init(&d->delay_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->delay_cond, &attr);
    pthread_condattr_destroy(&attr);
}

void kv_delayed_free(struct kv_dev *d)
{
    kv_delayed_stop(d);
    pthread_mutex_destroy(&d->delay_lock);
    pthread_cond_destroy(&d->delay_cond);
}

int kv_delayed_start(struct kv_dev *d)
{
    sigset_t all, old;
    int err;

    if (d->have_delay_thread)
        return 0;
    d->delay_stop = 0;
    sigfillset(&all);   /* signals stay with Python's main thread */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&d->delay_thread, NULL, send_when_due, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err == 0) {
        d->have_delay_thread = 1;
        (void)pthread_setname_np(d->delay_thread, "kvcpu-delay");
    }
    return err;
}

int kv_delayed_reply(struct kv_dev *d, fuse_req_t req, int err, const uint8_t *out,
                     size_t outsz, uint64_t due_ns)
{
    struct kv_delayed *e = calloc(1, sizeof(*e)), **at;

    if (e == NULL || !d->have_delay_thread) {
        free(e);
        return ENOMEM;  /* the caller replies now: late is better than never */
    }
    e->due_ns = due_ns;
    e->req = req;
    e->err = err;
    e->outsz = outsz < sizeof(e->out) ? outsz : sizeof(e->out);
    if (e->outsz)
        memcpy(e->out, out, e->outsz);
    pthread_mutex_lock(&d->delay_lock);
    for (at = &d->delayed; *at != NULL && (*at)->due_ns <= due_ns; at = &(*at)->next)
        ;
    e->next = *at;
    *at = e;
    d->ndelayed++;
    kv_shared_note(d);
    pthread_cond_signal(&d->delay_cond);
    pthread_mutex_unlock(&d->delay_lock);
    return 0;
}

void kv_delayed_stop(struct kv_dev *d)
{
    if (!d->have_delay_thread)
        return;
    pthread_mutex_lock(&d->delay_lock);
    d->delay_stop = 1;
    pthread_cond_signal(&d->delay_cond);
    pthread_mutex_unlock(&d->delay_lock);
    pthread_join(d->delay_thread, NULL);
    d->have_delay_thread = 0;
}
