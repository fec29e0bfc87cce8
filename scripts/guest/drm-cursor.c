/*
 * drm-cursor: gives the test guest a real mouse pointer through the legacy
 * DRM cursor ioctls, as a desktop's display server would, so QEMU's qxl
 * device sends SPICE cursor messages (SET with an ALPHA shape, MOVE).
 *
 * It becomes DRM master of /dev/dri/card0, creates a 64x64 32-bit dumb
 * buffer, draws an arrow in it (premultiplied ARGB: a white body, a black
 * outline, a half-transparent shadow), sets it as the first CRTC's cursor
 * with its hot spot (DRM_IOCTL_MODE_CURSOR2), then walks it through the
 * positions given on the command line, one every INTERVAL milliseconds,
 * forever, printing each one to stdout.
 *
 * The UAPI structs and ioctl numbers are those of Linux's
 * include/uapi/drm/drm.h and drm_mode.h, written out here so the program
 * needs neither libdrm nor the kernel headers' drm/ directory.
 *
 * usage: drm-cursor INTERVAL_MS X,Y [X,Y ...]
 * build: gcc -static -Os -o drm-cursor drm-cursor.c
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

struct drm_mode_card_res {
    uint64_t fb_id_ptr, crtc_id_ptr, connector_id_ptr, encoder_id_ptr;
    uint32_t count_fbs, count_crtcs, count_connectors, count_encoders;
    uint32_t min_width, max_width, min_height, max_height;
};

struct drm_mode_cursor2 {
    uint32_t flags, crtc_id;
    int32_t x, y;
    uint32_t width, height, handle;
    int32_t hot_x, hot_y;
};

struct drm_mode_create_dumb {
    uint32_t height, width, bpp, flags, handle, pitch;
    uint64_t size;
};

struct drm_mode_map_dumb {
    uint32_t handle, pad;
    uint64_t offset;
};

#define DRM_IOCTL_MODE_GETRESOURCES _IOWR('d', 0xA0, struct drm_mode_card_res)
#define DRM_IOCTL_MODE_CREATE_DUMB _IOWR('d', 0xB2, struct drm_mode_create_dumb)
#define DRM_IOCTL_MODE_MAP_DUMB _IOWR('d', 0xB3, struct drm_mode_map_dumb)
#define DRM_IOCTL_MODE_CURSOR2 _IOWR('d', 0xBB, struct drm_mode_cursor2)
#define DRM_MODE_CURSOR_BO 0x01
#define DRM_MODE_CURSOR_MOVE 0x02

#define SIDE 64
#define HOT_X 1
#define HOT_Y 1

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Whether (x, y) is inside the arrow: a right triangle with its tip at
 * (1, 1), 20 rows tall, plus a short tail. */
static int inside(int x, int y) {
    if (y >= 1 && y <= 20 && x >= 1 && x <= y) return 1;
    if (y >= 14 && y <= 27 && x >= y - 12 && x <= y - 8) return 1;
    return 0;
}

static uint32_t pixel(int x, int y) {
    if (inside(x, y)) {
        int edge = !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1);
        return edge ? 0xff000000u : 0xffffffffu;
    }
    if (inside(x - 2, y - 2)) return 0x80000000u; /* shadow: half-transparent black */
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: drm-cursor INTERVAL_MS X,Y [X,Y ...]\n");
        return 2;
    }
    int interval = atoi(argv[1]);
    int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
    if (fd < 0) die("open /dev/dri/card0");

    struct drm_mode_card_res res;
    memset(&res, 0, sizeof res);
    if (ioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &res) < 0) die("GETRESOURCES");
    if (res.count_crtcs == 0) {
        fprintf(stderr, "drm-cursor: no CRTC\n");
        return 1;
    }
    uint32_t *crtcs = calloc(res.count_crtcs, sizeof *crtcs);
    struct drm_mode_card_res ids;
    memset(&ids, 0, sizeof ids);
    ids.count_crtcs = res.count_crtcs;
    ids.crtc_id_ptr = (uint64_t)(uintptr_t)crtcs;
    if (ioctl(fd, DRM_IOCTL_MODE_GETRESOURCES, &ids) < 0) die("GETRESOURCES (ids)");

    struct drm_mode_create_dumb dumb;
    memset(&dumb, 0, sizeof dumb);
    dumb.width = SIDE;
    dumb.height = SIDE;
    dumb.bpp = 32;
    if (ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &dumb) < 0) die("CREATE_DUMB");
    struct drm_mode_map_dumb map;
    memset(&map, 0, sizeof map);
    map.handle = dumb.handle;
    if (ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &map) < 0) die("MAP_DUMB");
    uint8_t *bo = mmap(NULL, dumb.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)map.offset);
    if (bo == MAP_FAILED) die("mmap");
    for (int y = 0; y < SIDE; y++) {
        uint32_t *row = (uint32_t *)(bo + (size_t)y * dumb.pitch);
        for (int x = 0; x < SIDE; x++) row[x] = pixel(x, y);
    }
    munmap(bo, dumb.size);

    for (int i = 0;; i = (i + 1) % (argc - 2)) {
        int x = 0, y = 0;
        if (sscanf(argv[2 + i], "%d,%d", &x, &y) != 2) {
            fprintf(stderr, "drm-cursor: bad position %s\n", argv[2 + i]);
            return 2;
        }
        struct drm_mode_cursor2 c;
        memset(&c, 0, sizeof c);
        c.crtc_id = crtcs[0];
        /* The position is the cursor's top-left corner; the hot spot rides along. */
        c.x = x - HOT_X;
        c.y = y - HOT_Y;
        c.flags = DRM_MODE_CURSOR_MOVE;
        if (i == 0) {
            c.flags |= DRM_MODE_CURSOR_BO;
            c.width = SIDE;
            c.height = SIDE;
            c.handle = dumb.handle;
            c.hot_x = HOT_X;
            c.hot_y = HOT_Y;
        }
        if (ioctl(fd, DRM_IOCTL_MODE_CURSOR2, &c) < 0) die("CURSOR2");
        printf("SPICETAP-CURSOR:%d,%d\n", x, y);
        fflush(stdout);
        usleep((useconds_t)interval * 1000);
    }
}
