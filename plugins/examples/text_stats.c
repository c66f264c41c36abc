/* text_stats: a zeromesh plugin in C, built without a libc:
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o text_stats.wasm text_stats.c
 * Tool `text_stats` takes {"text": "..."} and returns
 * {"bytes": N, "words": N, "lines": N}. See plugins/ABI.md. */

#define HEAP_BYTES (1 << 20)

static unsigned char heap[HEAP_BYTES];
static unsigned int heap_used;
static char out[128];

__attribute__((export_name("zm_alloc"))) unsigned char *zm_alloc(int size) {
    if (size < 0 || (unsigned int)size > HEAP_BYTES - heap_used) {
        __builtin_trap();
    }
    unsigned char *block = heap + heap_used;
    heap_used += (unsigned int)size;
    return block;
}

static long long pack(const char *ptr, int len) {
    return (long long)(((unsigned long long)(unsigned int)ptr << 32) | (unsigned int)len);
}

static int append(char *at, const char *text) {
    int n = 0;
    while (text[n]) {
        at[n] = text[n];
        n++;
    }
    return n;
}

static int append_number(char *at, unsigned int value) {
    char digits[10];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (int i = 0; i < count; i++) {
        at[i] = digits[count - 1 - i];
    }
    return count;
}

static long long fail(const char *message) {
    int n = append(out, "{\"error\": \"");
    n += append(out + n, message);
    n += append(out + n, "\"}");
    return pack(out, n);
}

/* Finds the string value of "text" in a JSON object; returns its start
 * (just after the opening quote) or 0. */
static const unsigned char *find_text(const unsigned char *json, int len) {
    static const char key[] = "\"text\"";
    for (int i = 0; i + 6 <= len; i++) {
        int match = 1;
        for (int k = 0; k < 6; k++) {
            if (json[i + k] != (unsigned char)key[k]) {
                match = 0;
                break;
            }
        }
        if (!match) {
            continue;
        }
        int j = i + 6;
        while (j < len && (json[j] == ' ' || json[j] == ':' || json[j] == '\n' || json[j] == '\t')) {
            j++;
        }
        return (j < len && json[j] == '"') ? json + j + 1 : 0;
    }
    return 0;
}

__attribute__((export_name("zm_call"))) long long zm_call(const unsigned char *tool, int tool_len,
                                                         const unsigned char *args, int args_len) {
    (void)tool;
    (void)tool_len;
    const unsigned char *p = find_text(args, args_len);
    if (!p) {
        return fail("expected {\\\"text\\\": string}");
    }
    const unsigned char *end = args + args_len;
    unsigned int bytes = 0, words = 0, lines = 0;
    int in_word = 0;
    while (p < end && *p != '"') {
        unsigned char c = *p++;
        if (c == '\\' && p < end) {
            unsigned char escaped = *p++;
            c = escaped == 'n' ? '\n' : escaped == 't' ? '\t' : escaped;
            if (escaped == 'u') {
                p += 4; /* one escaped code unit, counted as one byte */
            }
        }
        bytes++;
        if (c == '\n') {
            lines++;
        }
        int space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
        if (!space && !in_word) {
            words++;
        }
        in_word = !space;
    }
    if (p >= end) {
        return fail("unterminated text");
    }
    if (bytes > 0) {
        lines++;
    }
    int n = append(out, "{\"bytes\": ");
    n += append_number(out + n, bytes);
    n += append(out + n, ", \"words\": ");
    n += append_number(out + n, words);
    n += append(out + n, ", \"lines\": ");
    n += append_number(out + n, lines);
    n += append(out + n, "}");
    return pack(out, n);
}
