/* One device's life: its state made, shared with the helper, and freed
 * (after its session's thread and the replies it held back are gone).  At
 * the top of the native files: it calls into each of them, none calls it.
 */

#include "internal.h"     /* first: it sets _GNU_SOURCE and the FUSE API version */

#include <stdlib.h>
#include <time.h>

struct kv_dev *kv_dev_new(uint32_t ring_events, int wake_fd, int lossless)
{
    struct kv_dev *d = calloc(1, sizeof(*d));
    pthread_condattr_t attr;
    uint32_t cap = 1;

    if (d == NULL)
        return NULL;
    while (cap < ring_events && cap < (1u << 24))
        cap <<= 1;
    d->slots = calloc(cap, sizeof(struct kv_event));
    if (d->slots == NULL) {
        free(d);
        return NULL;
    }
    d->cap = cap;
    d->lossless = !!lossless;
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->room_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->room, &attr);
    pthread_condattr_destroy(&attr);
    kv_delayed_init(d);
    kv_dev_power_on(d);
    d->present = 1;
    d->wake_fd = wake_fd;
    d->exit_fd = -1;
    d->watch_kick_fd = -1;
    d->step_limit = 1ull << 32;
    return d;
}

void kv_dev_share(struct kv_dev *d, struct kv_shared *shared)
{
    d->shared = shared;
}

void kv_dev_free(struct kv_dev *d)
{
    if (d == NULL)
        return;
    kv_watch_stop(d);
    kv_fast_stop(d);       /* the session's thread, and the replies it held back */
    kv_delayed_free(d);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->room_lock);
    pthread_cond_destroy(&d->room);
    free(d->slots);
    free(d);
}
