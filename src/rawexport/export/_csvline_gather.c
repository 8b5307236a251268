/*
 * gather and bucket (see _csvline.c): lines picked by index, and the range of each value.
 */
#include "_csvline.h"

/* Rows ahead whose source is prefetched while a line is gathered. */
#define AHEAD 8

static int
compare_bytes(const unsigned char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

PyObject *
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
PyObject *
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
    int bad = 0;
    /* Random reads of the sources' offsets, then of their lines: without the GIL, and the
     * source of a line a few rows ahead is prefetched while this one is copied. */
    Py_BEGIN_ALLOW_THREADS
    offs[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t c = ch[i];
        int64_t r = rw[i];
        if (c < 0 || c >= nchunks || r < 0 || r >= count[c]) {
            bad = 1;
            break;
        }
        if (i + AHEAD < n) {
            int32_t c2 = ch[i + AHEAD];
            if (c2 >= 0 && c2 < nchunks)
                __builtin_prefetch((const int64_t *)offs_v[c2].buf + first[c2] + rw[i + AHEAD]);
        }
        const int64_t *o64 = (const int64_t *)offs_v[c].buf + first[c];
        offs[i + 1] = offs[i] + (o64[r + 1] - o64[r]);
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_IndexError, "gather index out of range");
        goto done;
    }
    if (allocate_buffer(allocate, (Py_ssize_t)offs[n], &data) < 0)
        goto done;
    unsigned char *out = (unsigned char *)data.view.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + AHEAD < n) {
            int32_t c2 = ch[i + AHEAD];
            const int64_t *o2 = (const int64_t *)offs_v[c2].buf + first[c2];
            const unsigned char *p2 = (const unsigned char *)data_v[c2].buf + o2[rw[i + AHEAD]];
            __builtin_prefetch(p2);
            __builtin_prefetch(p2 + 64);
            __builtin_prefetch(p2 + 128);
            __builtin_prefetch(p2 + 192);
        }
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
