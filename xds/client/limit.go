package client

import (
	"math/rand/v2"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Defaults of ApiConfigSource.rate_limit_settings when the message is
// present but a field is unset (config_source.proto).
const (
	defaultRateLimitMaxTokens = 100
	defaultRateLimitFillRate  = 10
)

// The NACK gate: repeated NACKs of one type with the same error text may go
// out in a burst of nackBurst, then one per nackInterval. go-control-plane's
// snapshot cache answers every NACK with the same rejected snapshot at once,
// so without this gate a bad snapshot turns into a tight request/response
// loop (X-ACK-8).
const (
	nackBurst    = 3
	nackInterval = time.Second
)

// nackLogEvery is how often a repeated identical NACK is logged again.
const nackLogEvery = 100

// minWait keeps a rate-limited sender from waking up for a wait so small that
// float rounding leaves the bucket still empty.
const minWait = time.Millisecond

// bucket is a token bucket. It is not safe for concurrent use: each one is
// owned by one loop goroutine.
type bucket struct {
	max    float64 // capacity
	rate   float64 // tokens per second
	tokens float64
	last   time.Time // when tokens was last brought up to date
}

func newBucket(capacity, perSecond float64, now time.Time) *bucket {
	return &bucket{max: capacity, rate: perSecond, tokens: capacity, last: now}
}

// rateLimitBucket builds Envoy's request rate limiter from
// ApiConfigSource.rate_limit_settings; nil settings disable it.
func rateLimitBucket(s *corev3.RateLimitSettings, now time.Time) *bucket {
	if s == nil {
		return nil
	}
	capacity := float64(defaultRateLimitMaxTokens)
	if s.GetMaxTokens() != nil {
		capacity = float64(s.GetMaxTokens().GetValue())
	}
	rate := float64(defaultRateLimitFillRate)
	if s.GetFillRate() != nil && s.GetFillRate().GetValue() > 0 {
		rate = s.GetFillRate().GetValue()
	}
	if capacity < 1 {
		capacity = 1
	}
	return newBucket(capacity, rate, now)
}

func (b *bucket) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if b.tokens > b.max {
			b.tokens = b.max
		}
	}
	b.last = now
}

// wait is how long until a token is available; 0 when one is available now.
func (b *bucket) wait(now time.Time) time.Duration {
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	d := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	return max(d, minWait)
}

// take consumes a token; the caller checked wait first.
func (b *bucket) take(now time.Time) {
	b.refill(now)
	b.tokens--
}

// fill resets the bucket to full.
func (b *bucket) fill(now time.Time) {
	b.tokens = b.max
	b.last = now
}

// nackGate delays consecutive NACKs of one type that carry the same error
// text. An ACK, or a NACK with another text, starts a new burst.
type nackGate struct {
	lastErr string // error text of the last NACK sent; "" after an ACK
	b       *bucket
}

// wait is how long the NACK with text msg must wait before it may be sent.
func (g *nackGate) wait(msg string, now time.Time) time.Duration {
	if g.b == nil {
		g.b = newBucket(nackBurst, float64(time.Second)/float64(nackInterval), now)
	}
	if msg != g.lastErr {
		g.lastErr = msg
		g.b.fill(now)
	}
	return g.b.wait(now)
}

// sentNACK records that a NACK went out (wait returned 0 for it).
func (g *nackGate) sentNACK(now time.Time) { g.b.take(now) }

// sentACK ends a run of NACKs.
func (g *nackGate) sentACK() { g.lastErr = "" }

// nackLog decides which NACKs of one type are logged: the first of a run of
// identical error texts, then every nackLogEvery-th repetition.
type nackLog struct {
	lastErr string
	count   int // NACKs with lastErr in the current run
}

// note records a NACK with text msg and reports whether to log it, and the
// number of identical NACKs in the run so far.
func (l *nackLog) note(msg string) (bool, int) {
	if msg != l.lastErr {
		l.lastErr, l.count = msg, 0
	}
	l.count++
	return l.count == 1 || l.count%nackLogEvery == 0, l.count
}

// ack ends a run.
func (l *nackLog) ack() { l.lastErr, l.count = "", 0 }

// backoff is a jittered exponential backoff: the n-th delay is drawn from
// [c/2, c] with c = min(initial·2ⁿ, max). Envoy draws from [0, c); the lower
// bound keeps a flapping server from being hammered at near-zero intervals.
type backoff struct {
	initial, max time.Duration
	n            int
}

func (b *backoff) next() time.Duration {
	c := b.initial
	for i := 0; i < b.n && c < b.max; i++ {
		c *= 2
	}
	c = min(c, b.max)
	if c < b.max {
		b.n++
	}
	half := c / 2
	return half + rand.N(c-half+1)
}

func (b *backoff) reset() { b.n = 0 }
