/*
 * build and encode (see _csvline.c): the quoting scan and escaping of values, the hash of
 * each line, and build's two passes (line lengths, then the lines).
 */
#include "_csvline.h"

/* Rows written together in pass 2: their lines stay in cache for their hashes. */
#define BLOCK 128
/* Spare bytes at the end of the lines buffer, for copy_value's 16-byte moves. */
#define SLACK 16

#if defined(__SSE2__)
#include <emmintrin.h>

/* Bits of the 16 bytes at p that are ',' '"' '\\' LF or CR (all) or '"' '\\' (escape). */
static inline void
masks16(const unsigned char *p, unsigned *all, unsigned *escape)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i e = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
    __m128i q = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(',')),
                             _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\r'))));
    *escape = (unsigned)_mm_movemask_epi8(e);
    *all = *escape | (unsigned)_mm_movemask_epi8(q);
}
#endif

/* memcpy for the many short values: one 16-byte move when both sides have room. avail:
 * bytes readable from s; room: bytes writable at out that nothing has been written to yet
 * (the rest of this line, or SLACK past the end of the buffer). */
static inline unsigned char *
copy_value(unsigned char *out, const unsigned char *s, size_t len, size_t avail, size_t room)
{
#if defined(__SSE2__)
    if (len <= 16 && avail >= 16 && room >= 16) {
        _mm_storeu_si128((__m128i *)out, _mm_loadu_si128((const __m128i *)s));
        return out + len;
    }
#endif
    (void)avail;
    (void)room;
    memcpy(out, s, len);
    return out + len;
}

/* Extra output bytes a value needs: 0 (verbatim), or 2 quotes plus one backslash per '"'
 * and '\\'. *escapes tells whether any backslash is needed. avail: bytes readable from s
 * (to the end of its buffer), at least len. */
static inline size_t
scan(const unsigned char *s, size_t len, size_t avail, int *escapes)
{
    size_t quote = 0, count = 0, i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= avail && i < len; i += 16) {
        unsigned all, escape;
        masks16(s + i, &all, &escape);
        if (len - i < 16) {
            unsigned keep = (1u << (len - i)) - 1;
            all &= keep;
            escape &= keep;
        }
        quote |= all;
        while (escape) {
            count++;
            escape &= escape - 1;
        }
    }
#endif
    for (; i < len; i++) {
        quote |= special[s[i]];
        count += special[s[i]] >> 1;
    }
    *escapes = count != 0;
    return quote ? 2 + count : 0;
}

/* Copy s with a backslash before every '"' and '\\'; returns the new end. */
static inline unsigned char *
put_escaped(unsigned char *out, const unsigned char *s, size_t len, size_t avail)
{
    size_t i = 0, done = 0;
#if defined(__SSE2__)
    for (; i + 16 <= avail && i < len; i += 16) {
        unsigned all, escape;
        masks16(s + i, &all, &escape);
        if (len - i < 16)
            escape &= (1u << (len - i)) - 1;
        while (escape) {
            size_t j = i + (size_t)__builtin_ctz(escape);
            memcpy(out, s + done, j - done);
            out += j - done;
            *out++ = '\\';
            *out++ = s[j];
            done = j + 1;
            escape &= escape - 1;
        }
    }
    if (i > len)
        i = len;
#endif
    for (; i < len; i++) {
        if (special[s[i]] == 3) {
            memcpy(out, s + done, i - done);
            out += i - done;
            *out++ = '\\';
            *out++ = s[i];
            done = i + 1;
        }
    }
    memcpy(out, s + done, len - done);
    return out + (len - done);
}

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* Eight bytes at a time, two independent lanes, murmur3's finalizer: not cryptographic,
 * only well spread (rows with equal keys and equal hashes are ordered by their bytes). */
static uint64_t
hash_line(const unsigned char *p, size_t len)
{
    uint64_t a = 0x9e3779b97f4a7c15ULL ^ len, b = 0xc2b2ae3d27d4eb4fULL;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        uint64_t w1, w2;
        memcpy(&w1, p + i, 8);
        memcpy(&w2, p + i + 8, 8);
        a = rotl64(a ^ (w1 * 0x87c37b91114253d5ULL), 31) * 0x4cf5ad432745937fULL;
        b = rotl64(b ^ (w2 * 0x4cf5ad432745937fULL), 33) * 0x87c37b91114253d5ULL;
    }
    uint64_t tail[2] = {0, 0};
    memcpy(tail, p + i, len - i);
    a = rotl64(a ^ (tail[0] * 0x87c37b91114253d5ULL), 31) * 0x4cf5ad432745937fULL;
    b = rotl64(b ^ (tail[1] * 0x4cf5ad432745937fULL), 33) * 0x87c37b91114253d5ULL;
    return fmix64(a ^ rotl64(b, 17)) ^ fmix64(b + len);
}

static const char DIGIT_PAIRS[201] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

/* Decimal digits of m. */
static inline size_t
digits(uint64_t m)
{
    size_t len = 1;
    while (m >= 10000) {
        m /= 10000;
        len += 4;
    }
    return len + (m >= 10) + (m >= 100) + (m >= 1000);
}

static inline size_t
int_len(int64_t v)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    return digits(m) + (v < 0);
}

/* Decimal digits of v, sign included, into out (at least 20 bytes); returns the length. */
static inline size_t
int_text(int64_t v, unsigned char *out)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t len = digits(m) + (v < 0);
    unsigned char *p = out + len;
    while (m >= 100) {
        p -= 2;
        memcpy(p, DIGIT_PAIRS + 2 * (m % 100), 2);
        m /= 100;
    }
    if (m >= 10) {
        p -= 2;
        memcpy(p, DIGIT_PAIRS + 2 * m, 2);
    }
    else
        *--p = (unsigned char)('0' + m);
    if (v < 0)
        out[0] = '-';
    return len;
}

/* Pass 1 of a DICT column: each valid row's entry length added to its line's length; -1
 * on an index outside the dictionary (entry offsets were checked when parsed). */
static int
dict_lengths(const column *col, Py_ssize_t n, int64_t *lens)
{
    const int32_t *ind = (const int32_t *)col->a.buf + col->offset;
    const int64_t *eo = (const int64_t *)col->b.buf;
    uint32_t items = (uint32_t)col->items;
    const unsigned char *bits = col->has_validity ? (const unsigned char *)col->validity.buf : NULL;
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t i = col->offset + r;
        if (bits && !((bits[i >> 3] >> (i & 7)) & 1))
            continue;
        uint32_t e = (uint32_t)ind[r];
        if (e >= items)
            return -1;
        lens[r] += eo[e + 1] - eo[e];
    }
    return 0;
}

/* Pass 1 of an INT64 column. */
static void
int_lengths(const column *col, Py_ssize_t n, int64_t *lens)
{
    const int64_t *v = (const int64_t *)col->a.buf + col->offset;
    const unsigned char *bits = col->has_validity ? (const unsigned char *)col->validity.buf : NULL;
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t i = col->offset + r;
        if (bits && !((bits[i >> 3] >> (i & 7)) & 1))
            continue;
        lens[r] += (int64_t)int_len(v[r]);
    }
}

PyObject *
build(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_ssize_t n, ncols;
    PyObject *seq, *allocate, *dest_obj = Py_None;
    if (!PyArg_ParseTuple(args, "nOO|O", &n, &seq, &allocate, &dest_obj))
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "negative row count");
    if (!PyCallable_Check(allocate))
        return PyErr_Format(PyExc_TypeError, "allocate must be callable");
    /* dest: where each input row's line goes (a permutation of 0..n-1), or in order. */
    Py_buffer dest_view = {0};
    const int64_t *dest = NULL;
    if (dest_obj != Py_None) {
        if (PyObject_GetBuffer(dest_obj, &dest_view, PyBUF_SIMPLE) < 0)
            return NULL;
        dest = (const int64_t *)dest_view.buf;
        int ok = dest_view.len >= n * 8;
        if (ok) {
            /* must be a permutation: every position written exactly once */
            unsigned char *seen = PyMem_Calloc((size_t)n + 1, 1);
            if (seen == NULL) {
                PyBuffer_Release(&dest_view);
                return PyErr_NoMemory();
            }
            for (Py_ssize_t r = 0; r < n && ok; r++) {
                int64_t d = dest[r];
                ok = d >= 0 && d < n && !seen[d];
                if (ok)
                    seen[d] = 1;
            }
            PyMem_Free(seen);
        }
        if (!ok) {
            PyBuffer_Release(&dest_view);
            return PyErr_Format(PyExc_ValueError, "dest must be a permutation of the rows");
        }
    }
    column *cols = parse_columns(seq, n, &ncols);
    if (cols == NULL) {
        if (dest)
            PyBuffer_Release(&dest_view);
        return NULL;
    }
    unsigned char *kinds = NULL;
    int64_t *cursor = NULL, *ends = NULL;
    void *lens_scratch = NULL; /* n int64: line lengths in input order (dest only) */
    out_buffer data = {NULL}, offsets = {NULL}, hashes = {NULL};
    if (n > (PY_SSIZE_T_MAX - 1) / ncols / 8) {
        PyErr_SetString(PyExc_OverflowError, "batch too large");
        goto fail;
    }
    /* Per STR value: 0 verbatim, 1 quoted, 2 quoted and escaped (column-major). */
    kinds = PyMem_Malloc((size_t)(n * ncols) + 1);
    cursor = PyMem_Malloc(BLOCK * sizeof(int64_t));
    ends = PyMem_Malloc(BLOCK * sizeof(int64_t));
    if (dest)
        lens_scratch = PyMem_Malloc((size_t)n * sizeof(int64_t) + 1);
    if (kinds == NULL || cursor == NULL || ends == NULL || (dest && lens_scratch == NULL)) {
        PyErr_NoMemory();
        goto fail;
    }
    if (allocate_buffer(allocate, (n + 1) * 8, &offsets) < 0 ||
        allocate_buffer(allocate, n * 8, &hashes) < 0)
        goto fail;
    int64_t *offs = (int64_t *)offsets.view.buf;
    uint64_t *hs = (uint64_t *)hashes.view.buf;
    int bad = 0;

    /* Pass 1, column by column (sequential reads): each line's length. offs[r + 1] holds
     * line r's length until the prefix sum turns it into its end. */
    Py_BEGIN_ALLOW_THREADS
    offs[0] = 0;
    for (Py_ssize_t r = 0; r < n; r++)
        offs[r + 1] = ncols; /* separators and the newline */
    for (Py_ssize_t j = 0; j < ncols && !bad; j++) {
        const column *col = &cols[j];
        unsigned char *kind = kinds + j * n;
        if (col->kind == DICT || col->kind == INT64) {
            memset(kind, 0, (size_t)n);
            if (col->kind == INT64)
                int_lengths(col, n, offs + 1);
            else if (dict_lengths(col, n, offs + 1) < 0)
                bad = 1;
            continue;
        }
        for (Py_ssize_t r = 0; r < n; r++) {
            Py_ssize_t i = col->offset + r;
            kind[r] = 0;
            if (!is_valid(col, i))
                continue;
            const unsigned char *s;
            size_t len, avail, extra = 0;
            if (value_at(col, i, &s, &len, &avail) < 0) {
                bad = 1;
                break;
            }
            if (col->quote) {
                int escapes;
                extra = scan(s, len, avail, &escapes);
                kind[r] = extra ? (unsigned char)(1 + escapes) : 0;
            }
            offs[r + 1] += (int64_t)(len + extra);
        }
    }
    if (dest && !bad) {
        /* lengths were summed in input order (sequential); move each to its position */
        int64_t *lens = (int64_t *)lens_scratch;
        memcpy(lens, offs + 1, (size_t)n * sizeof(int64_t));
        for (Py_ssize_t r = 0; r < n; r++)
            offs[dest[r] + 1] = lens[r];
    }
    for (Py_ssize_t r = 0; r < n; r++)
        offs[r + 1] += offs[r];
    Py_END_ALLOW_THREADS

    if (bad) {
        PyErr_SetString(PyExc_ValueError, "column offsets or indices outside its data");
        goto fail;
    }
    if (allocate_buffer(allocate, (Py_ssize_t)offs[n] + SLACK, &data) < 0)
        goto fail;
    unsigned char *base = (unsigned char *)data.view.buf;

    /* Pass 2, BLOCK rows at a time and column by column within them: sequential reads,
     * writes within a block's lines (which stay in cache for their hashes). */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r0 = 0; r0 < n; r0 += BLOCK) {
        Py_ssize_t nb = n - r0 < BLOCK ? n - r0 : BLOCK;
        for (Py_ssize_t k = 0; k < nb; k++) {
            Py_ssize_t at = dest ? dest[r0 + k] : r0 + k;
            cursor[k] = offs[at];
            ends[k] = offs[at + 1];
        }
        for (Py_ssize_t j = 0; j < ncols; j++) {
            const column *col = &cols[j];
            const unsigned char *kind = kinds + j * n + r0;
            const unsigned char *bits =
                col->has_validity ? (const unsigned char *)col->validity.buf : NULL;
            if (col->kind == DICT) {
                /* indices and entry offsets were checked in pass 1 and when parsed */
                const int32_t *ind = (const int32_t *)col->a.buf + col->offset + r0;
                const int64_t *eo = (const int64_t *)col->b.buf;
                const unsigned char *edata = (const unsigned char *)col->c.buf;
                int64_t elen = (int64_t)col->c.len;
                for (Py_ssize_t k = 0; k < nb; k++) {
                    unsigned char *out = base + cursor[k];
                    if (j)
                        *out++ = ',';
                    Py_ssize_t i = col->offset + r0 + k;
                    if (!bits || ((bits[i >> 3] >> (i & 7)) & 1)) {
                        int64_t lo = eo[ind[k]], hi = eo[ind[k] + 1];
                        out = copy_value(out, edata + lo, (size_t)(hi - lo), (size_t)(elen - lo),
                                         (size_t)(base + ends[k] - out));
                    }
                    cursor[k] = out - base;
                }
                continue;
            }
            if (col->kind == INT64) {
                const int64_t *v = (const int64_t *)col->a.buf + col->offset + r0;
                for (Py_ssize_t k = 0; k < nb; k++) {
                    unsigned char *out = base + cursor[k];
                    if (j)
                        *out++ = ',';
                    Py_ssize_t i = col->offset + r0 + k;
                    if (!bits || ((bits[i >> 3] >> (i & 7)) & 1))
                        out += int_text(v[k], out);
                    cursor[k] = out - base;
                }
                continue;
            }
            for (Py_ssize_t k = 0; k < nb; k++) {
                unsigned char *out = base + cursor[k];
                if (j)
                    *out++ = ',';
                Py_ssize_t i = col->offset + r0 + k;
                if (!is_valid(col, i)) {
                    cursor[k] = out - base;
                    continue;
                }
                const unsigned char *s;
                size_t len, avail;
                (void)value_at(col, i, &s, &len, &avail); /* checked in pass 1 */
                /* Later columns of this row are written after this one, so the whole rest
                 * of the line (its newline included) may be scribbled on. */
                size_t room = (size_t)(base + ends[k] - out);
                if (kind[k] == 0)
                    out = copy_value(out, s, len, avail, room);
                else {
                    *out++ = '"';
                    if (kind[k] == 2)
                        out = put_escaped(out, s, len, avail);
                    else
                        out = copy_value(out, s, len, avail, room - 1);
                    *out++ = '"';
                }
                cursor[k] = out - base;
            }
        }
        for (Py_ssize_t k = 0; k < nb; k++) {
            Py_ssize_t at = dest ? dest[r0 + k] : r0 + k;
            int64_t start = offs[at], end = offs[at + 1];
            base[end - 1] = '\n';
            hs[at] = hash_line(base + start, (size_t)(end - start));
        }
    }
    Py_END_ALLOW_THREADS

    PyMem_Free(kinds);
    PyMem_Free(cursor);
    PyMem_Free(ends);
    PyMem_Free(lens_scratch);
    release(cols, ncols);
    PyMem_Free(cols);
    if (dest)
        PyBuffer_Release(&dest_view);
    PyBuffer_Release(&data.view);
    PyBuffer_Release(&offsets.view);
    PyBuffer_Release(&hashes.view);
    PyObject *result = PyTuple_Pack(3, data.owner, offsets.owner, hashes.owner);
    Py_DECREF(data.owner);
    Py_DECREF(offsets.owner);
    Py_DECREF(hashes.owner);
    return result;

fail:
    PyMem_Free(kinds);
    PyMem_Free(cursor);
    PyMem_Free(ends);
    PyMem_Free(lens_scratch);
    drop_buffer(&data);
    drop_buffer(&offsets);
    drop_buffer(&hashes);
    release(cols, ncols);
    PyMem_Free(cols);
    if (dest)
        PyBuffer_Release(&dest_view);
    return NULL;
}

PyObject *
encode(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_ssize_t n;
    PyObject *item, *allocate;
    if (!PyArg_ParseTuple(args, "nOO", &n, &item, &allocate))
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "negative row count");
    column *col = parse_text_column(item, n);
    if (col == NULL)
        return NULL;
    out_buffer data = {NULL}, offsets = {NULL};
    if (allocate_buffer(allocate, (n + 1) * 8, &offsets) < 0)
        goto fail;
    int64_t *offs = (int64_t *)offsets.view.buf;
    offs[0] = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t i = col->offset + r;
        size_t len = 0, avail;
        const unsigned char *s;
        if (is_valid(col, i)) {
            if (value_at(col, i, &s, &len, &avail) < 0) {
                PyErr_SetString(PyExc_ValueError, "column offsets outside its data");
                goto fail;
            }
            int escapes;
            len += col->quote ? scan(s, len, avail, &escapes) : 0;
        }
        offs[r + 1] = offs[r] + (int64_t)len;
    }
    if (allocate_buffer(allocate, (Py_ssize_t)offs[n] + SLACK, &data) < 0)
        goto fail;
    unsigned char *out = (unsigned char *)data.view.buf;
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t i = col->offset + r;
        const unsigned char *s;
        size_t len, avail;
        if (!is_valid(col, i))
            continue;
        (void)value_at(col, i, &s, &len, &avail);
        int escapes = 0;
        size_t extra = col->quote ? scan(s, len, avail, &escapes) : 0;
        /* Values are written in order: everything past out is free (SLACK at the end). */
        size_t room = (size_t)((unsigned char *)data.view.buf + offs[n] + SLACK - out);
        if (!extra)
            out = copy_value(out, s, len, avail, room);
        else {
            *out++ = '"';
            out = escapes ? put_escaped(out, s, len, avail)
                          : copy_value(out, s, len, avail, room - 1);
            *out++ = '"';
        }
    }
    release(col, 1);
    PyMem_Free(col);
    PyBuffer_Release(&data.view);
    PyBuffer_Release(&offsets.view);
    PyObject *result = PyTuple_Pack(2, data.owner, offsets.owner);
    Py_DECREF(data.owner);
    Py_DECREF(offsets.owner);
    return result;
fail:
    drop_buffer(&data);
    drop_buffer(&offsets);
    release(col, 1);
    PyMem_Free(col);
    return NULL;
}
