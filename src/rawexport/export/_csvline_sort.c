/*
 * order (see _csvline.c): the export order of a group's rows, by their sort keys (text by
 * bytes, integers by value, nulls last in each) and then their line hashes.
 *
 * Rows are radix-sorted by an 8-byte prefix of the first key, whose order agrees with the
 * keys' (text: its first 8 bytes, zero-padded, big-endian; integers: the value with its
 * sign bit flipped; null: all ones); runs of equal prefixes are then sorted by every key
 * and the hash in full (mostly a few rows each: one visitor's).
 */
#include "_csvline.h"

/* Runs up to this long are insertion-sorted; longer ones merge-sorted. */
#define SMALL_RUN 24

typedef struct {
    uint64_t key;
    int64_t row;
} entry;

typedef struct {
    const column *keys;
    Py_ssize_t nkeys;
    const uint64_t *hashes;
} order_ctx;

static inline uint64_t
prefix_of(const column *col, Py_ssize_t r)
{
    Py_ssize_t i = col->offset + r;
    if (!is_valid(col, i))
        return UINT64_MAX;
    if (col->kind == INT64)
        return (uint64_t)((const int64_t *)col->a.buf)[i] ^ ((uint64_t)1 << 63);
    const unsigned char *s;
    size_t len, avail;
    (void)value_at(col, i, &s, &len, &avail); /* checked when parsed */
    uint64_t p = 0;
    for (size_t k = 0; k < 8; k++)
        p = (p << 8) | (k < len ? s[k] : 0);
    return p;
}

static int
compare_rows(const order_ctx *ctx, int64_t a, int64_t b)
{
    for (Py_ssize_t j = 0; j < ctx->nkeys; j++) {
        const column *col = &ctx->keys[j];
        Py_ssize_t ia = col->offset + (Py_ssize_t)a, ib = col->offset + (Py_ssize_t)b;
        int va = is_valid(col, ia), vb = is_valid(col, ib);
        if (!va || !vb) {
            if (va != vb)
                return va ? -1 : 1; /* nulls last */
            continue;
        }
        if (col->kind == INT64) {
            int64_t x = ((const int64_t *)col->a.buf)[ia], y = ((const int64_t *)col->a.buf)[ib];
            if (x != y)
                return x < y ? -1 : 1;
            continue;
        }
        const unsigned char *sa, *sb;
        size_t la, lb, avail;
        (void)value_at(col, ia, &sa, &la, &avail);
        (void)value_at(col, ib, &sb, &lb, &avail);
        int c = memcmp(sa, sb, la < lb ? la : lb);
        if (c)
            return c < 0 ? -1 : 1;
        if (la != lb)
            return la < lb ? -1 : 1;
    }
    uint64_t ha = ctx->hashes[a], hb = ctx->hashes[b];
    return ha < hb ? -1 : ha > hb;
}

static void
insertion_sort(const order_ctx *ctx, int64_t *rows, Py_ssize_t n)
{
    for (Py_ssize_t i = 1; i < n; i++) {
        int64_t r = rows[i];
        Py_ssize_t j = i;
        while (j > 0 && compare_rows(ctx, rows[j - 1], r) > 0) {
            rows[j] = rows[j - 1];
            j--;
        }
        rows[j] = r;
    }
}

/* Stable merge sort of rows[0..n) using tmp (n slots). */
static void
merge_sort(const order_ctx *ctx, int64_t *rows, int64_t *tmp, Py_ssize_t n)
{
    if (n <= SMALL_RUN) {
        insertion_sort(ctx, rows, n);
        return;
    }
    Py_ssize_t half = n / 2;
    merge_sort(ctx, rows, tmp, half);
    merge_sort(ctx, rows + half, tmp, n - half);
    if (compare_rows(ctx, rows[half - 1], rows[half]) <= 0)
        return;
    memcpy(tmp, rows, (size_t)half * sizeof(int64_t));
    Py_ssize_t i = 0, j = half, k = 0;
    while (i < half && j < n)
        rows[k++] = compare_rows(ctx, rows[j], tmp[i]) < 0 ? rows[j++] : tmp[i++];
    while (i < half)
        rows[k++] = tmp[i++];
}

/* LSD radix sort of entries by key, a byte at a time; bytes all rows share are skipped.
 * counts: 8 * 256 zeroed slots. */
static void
radix_sort(entry *items, entry *tmp, Py_ssize_t n, Py_ssize_t (*counts)[256])
{
    for (Py_ssize_t i = 0; i < n; i++)
        for (int d = 0; d < 8; d++)
            counts[d][(items[i].key >> (8 * d)) & 0xff]++;
    entry *src = items, *dst = tmp;
    for (int d = 0; d < 8; d++) {
        Py_ssize_t *c = counts[d];
        if (c[(src[0].key >> (8 * d)) & 0xff] == n)
            continue; /* one value of this byte: the order stays */
        Py_ssize_t at = 0;
        for (int v = 0; v < 256; v++) {
            Py_ssize_t k = c[v];
            c[v] = at;
            at += k;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            dst[c[(src[i].key >> (8 * d)) & 0xff]++] = src[i];
        entry *t = src;
        src = dst;
        dst = t;
    }
    if (src != items)
        memcpy(items, src, (size_t)n * sizeof(entry));
}

/* order(n, keys, hashes, out) fills out (n int64) with the rows in export order. */
PyObject *
order(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_ssize_t n, nkeys;
    PyObject *seq, *hashes_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "nOOO", &n, &seq, &hashes_obj, &out_obj))
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "negative row count");
    column *keys = parse_columns(seq, n, &nkeys);
    if (keys == NULL)
        return NULL;
    Py_buffer hv = {0}, ov = {0};
    entry *items = NULL, *tmp = NULL;
    Py_ssize_t(*counts)[256] = NULL;
    PyObject *result = NULL;
    for (Py_ssize_t j = 0; j < nkeys; j++)
        if (keys[j].kind == DICT) {
            PyErr_SetString(PyExc_ValueError, "sort keys are text or integers");
            goto done;
        }
    if (PyObject_GetBuffer(hashes_obj, &hv, PyBUF_SIMPLE) < 0)
        goto done;
    if (PyObject_GetBuffer(out_obj, &ov, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&hv);
        hv.obj = NULL;
        goto done;
    }
    if (hv.len < n * 8 || ov.len < n * 8) {
        PyErr_SetString(PyExc_ValueError, "hashes and out need 8 bytes a row");
        goto done;
    }
    items = PyMem_Malloc((size_t)n * sizeof(entry) + 1);
    tmp = PyMem_Malloc((size_t)n * sizeof(entry) + 1);
    counts = PyMem_Calloc(8, sizeof *counts);
    if (items == NULL || tmp == NULL || counts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    order_ctx ctx = {keys, nkeys, (const uint64_t *)hv.buf};
    int64_t *rows = (int64_t *)ov.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) {
        items[r].key = prefix_of(&keys[0], r);
        items[r].row = r;
    }
    if (n > 1)
        radix_sort(items, tmp, n, counts);
    for (Py_ssize_t r = 0; r < n; r++)
        rows[r] = items[r].row;
    /* runs of one prefix, in full (tmp is free again: its entries hold 2 rows each) */
    Py_ssize_t start = 0;
    for (Py_ssize_t r = 1; r <= n; r++) {
        if (r < n && items[r].key == items[start].key)
            continue;
        if (r - start > 1)
            merge_sort(&ctx, rows + start, (int64_t *)tmp, r - start);
        start = r;
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    if (hv.obj)
        PyBuffer_Release(&hv);
    if (ov.obj)
        PyBuffer_Release(&ov);
    PyMem_Free(items);
    PyMem_Free(tmp);
    PyMem_Free(counts);
    release(keys, nkeys);
    PyMem_Free(keys);
    return result;
}
