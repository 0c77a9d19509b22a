/* test_async_submit.c: the callback tokens of stages/async_submit.c: their
 * shape, that they come from the kernel's CSPRNG and share no state with
 * pl_random64 (a forked child, which holds a copy of the generator's state,
 * sees the outputs that follow; the token holds none of them and leaves the
 * generator where it was), and the constant-time compare. The callbacks
 * themselves are tested end to end in test_callbacks.py. */
#include "t.h"
#include "pl.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int b64val(char c)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *p = c ? strchr(a, c) : NULL;
    return p ? (int)(p - a) : -1;
}

/* decode base64url tok (a multiple of 4 characters) into out; its length. */
static size_t decode(const char *tok, unsigned char *out)
{
    size_t n = strlen(tok), k = 0;
    T_EQ(n % 4, 0);
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (int j = 0; j < 4; j++) {
            int d = b64val(tok[i + j]);
            T_CHECK(d >= 0);
            v = v << 6 | (uint32_t)d;
        }
        out[k++] = (unsigned char)(v >> 16);
        out[k++] = (unsigned char)(v >> 8);
        out[k++] = (unsigned char)v;
    }
    return k;
}

static int cmp_tok(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void tokens_are_url_safe_and_long(void)
{
    enum { N = 2000 };
    static char toks[N][CALLBACK_TOKEN_LEN + 1];
    unsigned char raw[64];
    size_t ones = 0;
    for (int i = 0; i < N; i++) {
        T_OK(async_submit_token_new(toks[i]));
        T_EQ(strlen(toks[i]), CALLBACK_TOKEN_LEN);
        T_EQ(strspn(toks[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
             CALLBACK_TOKEN_LEN);
        T_CHECK(async_submit_token_ok(toks[i], CALLBACK_TOKEN_LEN));
        size_t n = decode(toks[i], raw);
        T_CHECK(n * 8 >= 256); /* well over 128 bits */
        for (size_t k = 0; k < n; k++)
            ones += (size_t)__builtin_popcount(raw[k]);
    }
    /* Every token differs, and the bits are balanced (about half ones:
     * 2000 tokens of 288 bits, a binomial's sd of ~380 bits). */
    qsort(toks, N, sizeof toks[0], cmp_tok);
    for (int i = 1; i < N; i++)
        T_CHECK(strcmp(toks[i - 1], toks[i]) != 0);
    size_t bits = (size_t)N * CALLBACK_TOKEN_LEN / 4 * 3 * 8;
    T_CHECK(ones > bits / 2 - 4000 && ones < bits / 2 + 4000);
}

/* The child holds a copy of this thread's xorshift state, so its first
 * outputs are what the generator gives next here. */
static void tokens_share_no_state_with_the_fast_generator(void)
{
    uint64_t first = pl_random64(); /* seeded now, in both processes */
    (void)first;
    int fd[2];
    T_CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    T_CHECK(pid >= 0);
    if (pid == 0) {
        uint64_t next[8];
        for (int i = 0; i < 8; i++)
            next[i] = pl_random64();
        ssize_t w = write(fd[1], next, sizeof next);
        _exit(w == (ssize_t)sizeof next ? 0 : 1);
    }
    close(fd[1]);
    uint64_t next[8];
    T_EQ(read(fd[0], next, sizeof next), (ssize_t)sizeof next);
    close(fd[0]);
    int st;
    T_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    char tok[CALLBACK_TOKEN_LEN + 1];
    T_OK(async_submit_token_new(tok));
    unsigned char raw[64];
    size_t n = decode(tok, raw);
    for (int i = 0; i < 8; i++) {
        unsigned char be[8], le[8];
        char hex[17];
        pl_put_be64(be, next[i]);
        memcpy(le, &next[i], 8);
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)next[i]);
        T_CHECK(strstr(tok, hex) == NULL);
        for (size_t k = 0; k + 8 <= n; k++) {
            T_CHECK(memcmp(raw + k, be, 8) != 0);
            T_CHECK(memcmp(raw + k, le, 8) != 0);
        }
    }
    /* And the generator is where the child found it: making the token
     * drew nothing from it. */
    T_CHECK(pl_random64() == next[0]);
}

static void token_shapes_refused(void)
{
    char tok[CALLBACK_TOKEN_LEN + 1];
    T_OK(async_submit_token_new(tok));
    T_CHECK(async_submit_token_ok(tok, CALLBACK_TOKEN_LEN));
    T_CHECK(!async_submit_token_ok(tok, CALLBACK_TOKEN_LEN - 1));
    T_CHECK(!async_submit_token_ok("0123456789abcdef0123456789abcdef", 32)); /* the old hex ones */
    char bad[CALLBACK_TOKEN_LEN + 1];
    const char subs[] = {'+', '/', '=', '.', '%', ' ', '\0'};
    for (size_t i = 0; i < sizeof subs; i++) {
        memcpy(bad, tok, sizeof bad);
        bad[CALLBACK_TOKEN_LEN / 2] = subs[i];
        T_CHECK(!async_submit_token_ok(bad, CALLBACK_TOKEN_LEN));
    }
}

static void secrets_compare_whole(void)
{
    char a[33], b[33];
    memset(a, 'x', 32);
    a[32] = '\0';
    memcpy(b, a, sizeof a);
    T_CHECK(async_submit_secret_equal(a, b, 32));
    b[0] = 'y';
    T_CHECK(!async_submit_secret_equal(a, b, 32));
    b[0] = 'x';
    b[31] = 'y';
    T_CHECK(!async_submit_secret_equal(a, b, 32));
    T_CHECK(async_submit_secret_equal(a, b, 31));
    a[5] ^= 0x80;
    b[31] = 'x';
    T_CHECK(!async_submit_secret_equal(a, b, 32));
}

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(tokens_are_url_safe_and_long), T_CASE(tokens_share_no_state_with_the_fast_generator),
        T_CASE(token_shapes_refused), T_CASE(secrets_compare_whole), {NULL, NULL},
    };
    return t_main(argc, argv, "async_submit", cases);
}
