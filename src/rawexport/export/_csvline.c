/*
 * GrowingIO-dialect CSV lines from Arrow columns, built without the GIL.
 *
 * build(n, columns, allocate[, dest]) -> (data, offsets, hashes)
 *   n        rows to build
 *   columns  one tuple (kind, quote, validity, a, b, c, offset) per field:
 *              STR32/STR64  a: int32/int64 value offsets, b: UTF-8 data
 *              DICT         a: int32 indices, b: int64 offsets and c: data of the dictionary
 *                           entries, already encoded (see encode), written verbatim
 *              INT64        a: int64 values, written in decimal
 *            validity is the validity bitmap or None (no nulls); offset the array's logical
 *            offset into its buffers; quote applies to STR32/STR64 only.
 *   allocate called with a size, returns a writable buffer of that size (pa.allocate_buffer:
 *            Arrow's pool reuses memory, where fresh bytes objects fault in every page)
 *   dest     optional int64 buffer: the output position of each row (a permutation), so
 *            rows come out already grouped without moving their lines again
 *
 * Each line is the fields joined by ',' and ended by '\n'. A null is an empty field. A
 * quoted value is enclosed in '"' when it holds ',', '"', '\\', '\n' or '\r', and inside
 * the quotes every '"' and '\\' is preceded by '\\' (never a doubled quote).
 * data is the lines back to back, offsets n + 1 int64 (a large_string array's offsets),
 * hashes n uint64: a 64-bit hash of each whole line, the tie-break between equal sort keys.
 *
 * encode(n, column, allocate) -> (data, offsets): each value of one STR32/STR64 column as a
 * quoted field would be written (nulls empty), as a large_string array's buffers.
 *
 * gather(lines, chunk, row, allocate) -> (data, offsets): see gather below.
 *
 * bucket(n, column, bounds) -> bytes of n uint16: for each value of a STR32/STR64 column, how
 * many of the sorted bounds (bytes) are <= it (byte order, as DuckDB compares VARCHAR);
 * nulls get len(bounds) + 1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_COLUMNS 4096
/* Rows written together in pass 2: their lines stay in cache for their hashes. */
#define BLOCK 128
/* Spare bytes at the end of the lines buffer, for copy_value's 16-byte moves. */
#define SLACK 16

enum { STR32 = 0, STR64 = 1, DICT = 2, INT64 = 3 };

/* 1: forces quoting; 3: forces quoting and takes a backslash before it. */
static unsigned char special[256];

typedef struct {
    int kind, quote, has_validity;
    Py_ssize_t offset, items; /* items: values in a (DICT: entries in b) */
    Py_buffer validity, a, b, c;
    int held_a, held_b, held_c;
} column;

static inline int
is_valid(const column *col, Py_ssize_t i)
{
    if (!col->has_validity)
        return 1;
    const unsigned char *bits = (const unsigned char *)col->validity.buf;
    return (bits[i >> 3] >> (i & 7)) & 1;
}

/* Start of value i of a STR32/STR64 column, or of entry i of a DICT column. */
static inline int64_t
str_offset(const column *col, Py_ssize_t i)
{
    if (col->kind == STR32)
        return ((const int32_t *)col->a.buf)[i];
    if (col->kind == STR64)
        return ((const int64_t *)col->a.buf)[i];
    return ((const int64_t *)col->b.buf)[i];
}

static inline const Py_buffer *
str_data(const column *col)
{
    return col->kind == DICT ? &col->c : &col->b;
}

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

typedef struct {
    PyObject *owner;
    Py_buffer view;
} out_buffer;

/* size writable bytes from allocate(size); on success out holds the object and its view. */
static int
allocate_buffer(PyObject *allocate, Py_ssize_t size, out_buffer *out)
{
    out->owner = PyObject_CallFunction(allocate, "n", size);
    if (out->owner == NULL)
        return -1;
    if (PyObject_GetBuffer(out->owner, &out->view, PyBUF_WRITABLE) < 0) {
        Py_CLEAR(out->owner);
        return -1;
    }
    if (out->view.len < size) {
        PyBuffer_Release(&out->view);
        Py_CLEAR(out->owner);
        PyErr_SetString(PyExc_ValueError, "allocate returned a short buffer");
        return -1;
    }
    return 0;
}

static void
drop_buffer(out_buffer *b)
{
    if (b->owner != NULL) {
        PyBuffer_Release(&b->view);
        Py_CLEAR(b->owner);
    }
}

static void
release_column(column *col)
{
    if (col->has_validity)
        PyBuffer_Release(&col->validity);
    if (col->held_a)
        PyBuffer_Release(&col->a);
    if (col->held_b)
        PyBuffer_Release(&col->b);
    if (col->held_c)
        PyBuffer_Release(&col->c);
    col->has_validity = col->held_a = col->held_b = col->held_c = 0;
}

static void
release(column *cols, Py_ssize_t ncols)
{
    for (Py_ssize_t j = 0; j < ncols; j++)
        release_column(&cols[j]);
}

static int
get_buffer(PyObject *obj, Py_buffer *view, int *held)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    *held = 1;
    return 0;
}

static int
bad_column(const char *why)
{
    PyErr_SetString(PyExc_ValueError, why);
    return -1;
}

/* Parse one column tuple for n rows; on failure nothing is held. */
static int
parse_column(PyObject *item, column *col, Py_ssize_t n)
{
    PyObject *validity, *a, *b, *c;
    int quote;
    memset(col, 0, sizeof(*col));
    if (!PyArg_ParseTuple(item, "ipOOOOn", &col->kind, &quote, &validity, &a, &b, &c,
                          &col->offset))
        return -1;
    col->quote = quote;
    if (col->kind < STR32 || col->kind > INT64)
        return bad_column("unknown column kind");
    if (col->offset < 0)
        return bad_column("negative array offset");
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &col->validity, PyBUF_SIMPLE) < 0)
            return -1;
        col->has_validity = 1;
        if (col->validity.len * 8 < col->offset + n)
            goto short_buffers;
    }
    if (get_buffer(a, &col->a, &col->held_a) < 0)
        goto fail;
    if (col->kind != INT64 && get_buffer(b, &col->b, &col->held_b) < 0)
        goto fail;
    if (col->kind == DICT && get_buffer(c, &col->c, &col->held_c) < 0)
        goto fail;
    Py_ssize_t width = col->kind == STR32 || col->kind == DICT ? 4 : 8;
    Py_ssize_t need = col->offset + n + (col->kind <= STR64 ? 1 : 0);
    col->items = col->a.len / width;
    if (col->items < need)
        goto short_buffers;
    if (col->kind == DICT) {
        col->items = col->b.len / 8 - 1; /* entries */
        if (col->items < 0)
            goto short_buffers;
        int64_t lo = str_offset(col, 0), hi = str_offset(col, col->items);
        if (lo < 0 || hi < lo || hi > col->c.len)
            goto outside;
        /* entry offsets are checked per row (cheap) against the data length */
    }
    else if (col->kind <= STR64) {
        int64_t lo = str_offset(col, col->offset), hi = str_offset(col, col->offset + n);
        if (lo < 0 || hi < lo || hi > col->b.len)
            goto outside;
    }
    return 0;
short_buffers:
    release_column(col);
    return bad_column("column buffers shorter than the rows asked for");
outside:
    release_column(col);
    return bad_column("column offsets outside its data");
fail:
    release_column(col);
    return -1;
}

/* Bytes of value i (STR kinds: raw, before quoting; DICT: the encoded entry); -1 if bad. */
static inline int
value_at(const column *col, Py_ssize_t i, const unsigned char **s, size_t *len,
         size_t *avail)
{
    Py_ssize_t at = i;
    if (col->kind == DICT) {
        int32_t index = ((const int32_t *)col->a.buf)[i];
        if (index < 0 || index >= col->items)
            return -1;
        at = index;
    }
    int64_t lo = str_offset(col, at), hi = str_offset(col, at + 1);
    const Py_buffer *data = str_data(col);
    if (lo < 0 || hi < lo || hi > data->len)
        return -1;
    *s = (const unsigned char *)data->buf + lo;
    *len = (size_t)(hi - lo);
    *avail = (size_t)(data->len - lo);
    return 0;
}

/* Decimal digits of v, sign included, into out (at least 20 bytes); returns the length. */
static inline size_t
int_text(int64_t v, unsigned char *out)
{
    unsigned char tmp[20];
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t k = 0;
    do {
        tmp[k++] = (unsigned char)('0' + m % 10);
        m /= 10;
    } while (m);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (k)
        out[len++] = tmp[--k];
    return len;
}

static inline size_t
int_len(int64_t v)
{
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t len = v < 0 ? 2 : 1;
    while (m >= 10) {
        m /= 10;
        len++;
    }
    return len;
}

/* Parse the columns sequence into a fresh array; returns it (ncols set) or NULL. */
static column *
parse_columns(PyObject *seq, Py_ssize_t n, Py_ssize_t *ncols)
{
    PyObject *fast = PySequence_Fast(seq, "columns must be a sequence");
    if (fast == NULL)
        return NULL;
    *ncols = PySequence_Fast_GET_SIZE(fast);
    if (*ncols < 1 || *ncols > MAX_COLUMNS) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "between 1 and 4096 columns");
        return NULL;
    }
    column *cols = PyMem_Calloc((size_t)*ncols, sizeof(column));
    if (cols == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t j = 0; j < *ncols; j++) {
        if (parse_column(PySequence_Fast_GET_ITEM(fast, j), &cols[j], n) < 0) {
            release(cols, j);
            PyMem_Free(cols);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return cols;
}

static PyObject *
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
    int64_t *cursor = NULL;
    void *lens_scratch = NULL; /* n int64: line lengths in input order (dest only) */
    out_buffer data = {NULL}, offsets = {NULL}, hashes = {NULL};
    if (n > (PY_SSIZE_T_MAX - 1) / ncols / 8) {
        PyErr_SetString(PyExc_OverflowError, "batch too large");
        goto fail;
    }
    /* Per STR value: 0 verbatim, 1 quoted, 2 quoted and escaped (column-major). */
    kinds = PyMem_Malloc((size_t)(n * ncols) + 1);
    cursor = PyMem_Malloc(BLOCK * sizeof(int64_t));
    if (dest)
        lens_scratch = PyMem_Malloc((size_t)n * sizeof(int64_t) + 1);
    if (kinds == NULL || cursor == NULL || (dest && lens_scratch == NULL)) {
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
        for (Py_ssize_t r = 0; r < n; r++) {
            Py_ssize_t i = col->offset + r;
            kind[r] = 0;
            if (!is_valid(col, i))
                continue;
            if (col->kind == INT64) {
                offs[r + 1] += (int64_t)int_len(((const int64_t *)col->a.buf)[i]);
                continue;
            }
            const unsigned char *s;
            size_t len, avail, extra = 0;
            if (value_at(col, i, &s, &len, &avail) < 0) {
                bad = 1;
                break;
            }
            if (col->quote && col->kind != DICT) {
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
        for (Py_ssize_t k = 0; k < nb; k++)
            cursor[k] = offs[dest ? dest[r0 + k] : r0 + k];
        for (Py_ssize_t j = 0; j < ncols; j++) {
            const column *col = &cols[j];
            const unsigned char *kind = kinds + j * n + r0;
            for (Py_ssize_t k = 0; k < nb; k++) {
                unsigned char *out = base + cursor[k];
                if (j)
                    *out++ = ',';
                Py_ssize_t i = col->offset + r0 + k;
                if (!is_valid(col, i)) {
                    cursor[k] = out - base;
                    continue;
                }
                if (col->kind == INT64) {
                    out += int_text(((const int64_t *)col->a.buf)[i], out);
                    cursor[k] = out - base;
                    continue;
                }
                const unsigned char *s;
                size_t len, avail;
                (void)value_at(col, i, &s, &len, &avail); /* checked in pass 1 */
                /* Later columns of this row are written after this one, so the whole rest
                 * of the line (its newline included) may be scribbled on. */
                size_t room = (size_t)(base + offs[(dest ? dest[r0 + k] : r0 + k) + 1] - out);
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

/* Parse a single STR32/STR64 column for n rows (encode, bucket). */
static column *
parse_text_column(PyObject *item, Py_ssize_t n)
{
    PyObject *one = PyTuple_Pack(1, item);
    if (one == NULL)
        return NULL;
    Py_ssize_t ncols;
    column *col = parse_columns(one, n, &ncols);
    Py_DECREF(one);
    if (col != NULL && col->kind > STR64) {
        release(col, 1);
        PyMem_Free(col);
        PyErr_SetString(PyExc_ValueError, "a text column is needed");
        return NULL;
    }
    return col;
}

static PyObject *
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

static int
compare_bytes(const unsigned char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static PyObject *
bucket(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_ssize_t n;
    PyObject *item, *bounds;
    if (!PyArg_ParseTuple(args, "nOO!", &n, &item, &PyList_Type, &bounds))
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "negative row count");
    Py_ssize_t nb = PyList_GET_SIZE(bounds);
    if (nb > 65533)
        return PyErr_Format(PyExc_ValueError, "at most 65533 bounds");
    for (Py_ssize_t k = 0; k < nb; k++)
        if (!PyBytes_Check(PyList_GET_ITEM(bounds, k)))
            return PyErr_Format(PyExc_TypeError, "bounds must be bytes");
    column *col = parse_text_column(item, n);
    if (col == NULL)
        return NULL;
    PyObject *result = PyBytes_FromStringAndSize(NULL, n * 2);
    if (result == NULL)
        goto done;
    uint16_t *out = (uint16_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t i = col->offset + r;
        if (!is_valid(col, i)) {
            out[r] = (uint16_t)(nb + 1);
            continue;
        }
        const unsigned char *s;
        size_t len, avail;
        if (value_at(col, i, &s, &len, &avail) < 0) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_ValueError, "column offsets outside its data");
            goto done;
        }
        Py_ssize_t lo = 0, hi = nb; /* first bound > value */
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            PyObject *bound = PyList_GET_ITEM(bounds, mid);
            if (compare_bytes(s, len, PyBytes_AS_STRING(bound), (size_t)PyBytes_GET_SIZE(bound)) >= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        out[r] = (uint16_t)lo;
    }
done:
    release(col, 1);
    PyMem_Free(col);
    return result;
}

/* gather(lines, chunk, row, allocate) -> (data, offsets): lines[chunk[i]][row[i]] for each i.
 * lines: sequence of (offsets, data, offset, length) of large_string arrays; chunk: int32
 * and row: int64 buffers of equal length. */
static PyObject *
gather(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *seq, *chunk_obj, *row_obj, *allocate;
    if (!PyArg_ParseTuple(args, "OOOO", &seq, &chunk_obj, &row_obj, &allocate))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "lines must be a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t nchunks = PySequence_Fast_GET_SIZE(fast);
    Py_buffer *offs_v = PyMem_Calloc((size_t)nchunks + 1, sizeof(Py_buffer));
    Py_buffer *data_v = PyMem_Calloc((size_t)nchunks + 1, sizeof(Py_buffer));
    Py_ssize_t *first = PyMem_Calloc((size_t)nchunks + 1, sizeof(Py_ssize_t));
    Py_ssize_t *count = PyMem_Calloc((size_t)nchunks + 1, sizeof(Py_ssize_t));
    Py_buffer chunk_v = {0}, row_v = {0};
    int have_chunk = 0, have_row = 0;
    Py_ssize_t held = 0;
    out_buffer data = {NULL}, offsets = {NULL};
    PyObject *result = NULL;
    if (offs_v == NULL || data_v == NULL || first == NULL || count == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < nchunks; held++) {
        PyObject *o, *d;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, held), "OOnn", &o, &d,
                              &first[held], &count[held]))
            goto done;
        if (PyObject_GetBuffer(o, &offs_v[held], PyBUF_SIMPLE) < 0)
            goto done;
        if (PyObject_GetBuffer(d, &data_v[held], PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&offs_v[held]);
            goto done;
        }
        const int64_t *o64 = (const int64_t *)offs_v[held].buf;
        Py_ssize_t f = first[held], c = count[held];
        if (f < 0 || c < 0 || offs_v[held].len / 8 < f + c + 1 || o64[f] < 0 ||
            o64[f + c] < o64[f] || o64[f + c] > data_v[held].len) {
            held++;
            PyErr_SetString(PyExc_ValueError, "bad lines chunk");
            goto done;
        }
    }
    if (PyObject_GetBuffer(chunk_obj, &chunk_v, PyBUF_SIMPLE) < 0)
        goto done;
    have_chunk = 1;
    if (PyObject_GetBuffer(row_obj, &row_v, PyBUF_SIMPLE) < 0)
        goto done;
    have_row = 1;
    Py_ssize_t n = row_v.len / 8;
    if (chunk_v.len / 4 != n) {
        PyErr_SetString(PyExc_ValueError, "chunk and row differ in length");
        goto done;
    }
    const int32_t *ch = (const int32_t *)chunk_v.buf;
    const int64_t *rw = (const int64_t *)row_v.buf;
    if (allocate_buffer(allocate, (n + 1) * 8, &offsets) < 0)
        goto done;
    int64_t *offs = (int64_t *)offsets.view.buf;
    offs[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t c = ch[i];
        int64_t r = rw[i];
        if (c < 0 || c >= nchunks || r < 0 || r >= count[c]) {
            PyErr_SetString(PyExc_IndexError, "gather index out of range");
            goto done;
        }
        const int64_t *o64 = (const int64_t *)offs_v[c].buf + first[c];
        offs[i + 1] = offs[i] + (o64[r + 1] - o64[r]);
    }
    if (allocate_buffer(allocate, (Py_ssize_t)offs[n], &data) < 0)
        goto done;
    unsigned char *out = (unsigned char *)data.view.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t c = ch[i];
        const int64_t *o64 = (const int64_t *)offs_v[c].buf + first[c];
        int64_t lo = o64[rw[i]], hi = o64[rw[i] + 1];
        memcpy(out + offs[i], (const unsigned char *)data_v[c].buf + lo, (size_t)(hi - lo));
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, data.owner, offsets.owner);
done:
    drop_buffer(&data);
    drop_buffer(&offsets);
    for (Py_ssize_t j = 0; j < held; j++) {
        PyBuffer_Release(&offs_v[j]);
        PyBuffer_Release(&data_v[j]);
    }
    if (have_chunk)
        PyBuffer_Release(&chunk_v);
    if (have_row)
        PyBuffer_Release(&row_v);
    PyMem_Free(offs_v);
    PyMem_Free(data_v);
    PyMem_Free(first);
    PyMem_Free(count);
    Py_DECREF(fast);
    return result;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS,
     "build(n, columns, allocate) -> (data, offsets, hashes): GrowingIO-dialect CSV lines."},
    {"encode", encode, METH_VARARGS,
     "encode(n, column, allocate) -> (data, offsets): each value as a quoted field."},
    {"gather", gather, METH_VARARGS,
     "gather(lines, chunk, row, allocate) -> (data, offsets): lines picked by index."},
    {"bucket", bucket, METH_VARARGS,
     "bucket(n, column, bounds) -> uint16 range number of each value (nulls last)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rawexport.export._csvline",
    "GrowingIO-dialect CSV lines from Arrow columns.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__csvline(void)
{
    special[(unsigned char)','] = 1;
    special[(unsigned char)'\n'] = 1;
    special[(unsigned char)'\r'] = 1;
    special[(unsigned char)'"'] = 3;
    special[(unsigned char)'\\'] = 3;
    return PyModule_Create(&module);
}
