/*
 * tiny: a freestanding 64-bit test guest for detvm's backends.
 *
 * The VMM loads it at 0x100000 and enters at its first byte in long mode (flat
 * segments, identity-mapped 4 GiB, interrupts off). It exercises port and MMIO exits,
 * PIT (through the 8259) and LAPIC timer interrupts, HLT sleeps and the UART, then
 * powers off through ACPI PM1a_CNT. Every line it prints depends only on what the
 * guest can observe deterministically, so every backend prints the same bytes.
 * Small on purpose (a few thousand instructions): kernel-mode code may be emulated.
 */
        .set    PIT_RELOAD, 1193
        /* MMIO above 2 GiB is reached through a base register: a 32-bit absolute
         * address would be sign-extended in 64-bit mode. */
        .set    LAPIC, 0xfee00000
        .set    LAPIC_EOI, 0xb0
        .set    LAPIC_SVR, 0xf0
        .set    LAPIC_LVT_TIMER, 0x320
        .set    LAPIC_TIMER_ICR, 0x380
        .set    LAPIC_TIMER_DCR, 0x3e0
        .set    HPET, 0xfed00000
        .set    HPET_CONFIG, 0x10
        .set    HPET_COUNTER, 0xf0

        .code64
        .text
        .globl _start
_start:
        mov     $0x80000, %rsp
        call    idt_setup
        lidt    idtr(%rip)
        lea     msg_hello(%rip), %rsi
        call    puts

/* --- 8259 PIC: vectors 0x20/0x28, only IRQ0 unmasked; read the mask back. */
        mov     $0x11, %al
        out     %al, $0x20
        out     %al, $0xa0
        mov     $0x20, %al
        out     %al, $0x21
        mov     $0x28, %al
        out     %al, $0xa1
        mov     $0x04, %al
        out     %al, $0x21
        mov     $0x02, %al
        out     %al, $0xa1
        mov     $0x01, %al
        out     %al, $0x21
        out     %al, $0xa1
        mov     $0xff, %al
        out     %al, $0xa1
        mov     $0xfe, %al
        out     %al, $0x21
        in      $0x21, %al
        lea     msg_imr_ok(%rip), %rsi
        cmp     $0xfe, %al
        je      1f
        lea     msg_imr_bad(%rip), %rsi
1:      call    puts

/* --- PIT channel 0, mode 2, 1193 ticks (~1 ms): sleep through three interrupts. */
        mov     $0x34, %al
        out     %al, $0x43
        mov     $(PIT_RELOAD & 0xff), %al
        out     %al, $0x40
        mov     $(PIT_RELOAD >> 8), %al
        out     %al, $0x40
        sti
2:      hlt
        cmpl    $3, pit_ticks(%rip)
        jb      2b
        cli
        /* Latch and read the count: just after a tick it is in the upper half. */
        xor     %al, %al
        out     %al, $0x43
        in      $0x40, %al
        mov     %al, %bl
        in      $0x40, %al
        mov     %al, %bh
        movzx   %bx, %ebx
        lea     msg_pit(%rip), %rsi
        call    puts
        mov     pit_ticks(%rip), %eax
        call    putdec
        lea     msg_count(%rip), %rsi
        call    puts
        lea     msg_yes(%rip), %rsi
        cmp     $(PIT_RELOAD / 2), %ebx
        ja      3f
        lea     msg_no(%rip), %rsi
3:      call    puts
        /* Stop the PIT (mode 0 without a count) and mask IRQ0. */
        mov     $0x30, %al
        out     %al, $0x43
        mov     $0xff, %al
        out     %al, $0x21

/* --- HPET: start the main counter, read it before and after the LAPIC part. */
        mov     $HPET, %r15d
        mov     $LAPIC, %r14d
        movl    $1, HPET_CONFIG(%r15)
        mov     HPET_COUNTER(%r15), %r12d

/* --- LAPIC: enable, timer periodic on vector 0x30, 62500 x 16 ns = 1 ms. */
        movl    $0x1ff, LAPIC_SVR(%r14)
        movl    $0x3, LAPIC_TIMER_DCR(%r14)
        movl    $0x20030, LAPIC_LVT_TIMER(%r14)
        movl    $62500, LAPIC_TIMER_ICR(%r14)
        sti
4:      hlt
        cmpl    $3, apic_ticks(%rip)
        jb      4b
        cli
        movl    $0x10000, LAPIC_LVT_TIMER(%r14)
        movl    $0, LAPIC_TIMER_ICR(%r14)
        mov     HPET_COUNTER(%r15), %r13d
        lea     msg_apic(%rip), %rsi
        call    puts
        mov     apic_ticks(%rip), %eax
        call    putdec
        lea     msg_nl(%rip), %rsi
        call    puts
        lea     msg_hpet(%rip), %rsi
        call    puts
        lea     msg_yes(%rip), %rsi
        cmp     %r12d, %r13d
        ja      5f
        lea     msg_no(%rip), %rsi
5:      call    puts

        lea     msg_done(%rip), %rsi
        call    puts
poweroff:
        mov     $0x3400, %ax            /* SLP_TYP=5 (S5) | SLP_EN */
        mov     $0x604, %dx
        out     %ax, %dx
6:      hlt
        jmp     6b

/* --- Interrupt handlers. */
pit_isr:
        push    %rax
        incl    pit_ticks(%rip)
        mov     $0x20, %al              /* non-specific EOI */
        out     %al, $0x20
        pop     %rax
        iretq

apic_isr:
        push    %rax
        incl    apic_ticks(%rip)
        mov     $(LAPIC + LAPIC_EOI), %eax
        movl    $0, (%rax)
        pop     %rax
        iretq

spurious_isr:
        iretq

/* Exceptions: print the vector and stop; never reached in a good run. */
        .balign 8
exc_stubs:
        .set    vec, 0
        .rept   32
        .balign 8
        push    $vec
        jmp     exc_common
        .set    vec, vec + 1
        .endr
exc_common:
        lea     msg_exc(%rip), %rsi
        call    puts
        pop     %rax
        call    putdec
        lea     msg_nl(%rip), %rsi
        call    puts
        jmp     poweroff

/* --- IDT: exception stubs at 0-31, PIT at 0x20, LAPIC timer at 0x30, spurious 0xff. */
idt_setup:
        xor     %edi, %edi
1:      lea     exc_stubs(%rip), %rsi
        lea     (%rsi,%rdi,8), %rsi
        call    set_gate
        inc     %edi
        cmp     $32, %edi
        jb      1b
        mov     $0x20, %edi
        lea     pit_isr(%rip), %rsi
        call    set_gate
        mov     $0x30, %edi
        lea     apic_isr(%rip), %rsi
        call    set_gate
        mov     $0xff, %edi
        lea     spurious_isr(%rip), %rsi
        call    set_gate
        ret

/* set_gate(vector %edi, handler %rsi): a present 64-bit interrupt gate, CS 0x08. */
set_gate:
        mov     %edi, %eax
        shl     $4, %eax
        lea     idt(%rip), %rdx
        add     %rax, %rdx
        mov     %si, (%rdx)
        movw    $0x08, 2(%rdx)
        movw    $0x8e00, 4(%rdx)
        mov     %rsi, %rax
        shr     $16, %rax
        mov     %ax, 6(%rdx)
        shr     $16, %rax
        mov     %eax, 8(%rdx)
        movl    $0, 12(%rdx)
        ret

/* --- UART output, polling LSR.THRE like a real driver. */
putc:
        push    %rax
1:      mov     $0x3fd, %dx
        in      %dx, %al
        test    $0x20, %al
        jz      1b
        pop     %rax
        mov     $0x3f8, %dx
        out     %al, %dx
        ret

/* puts(%rsi): a NUL-terminated string. */
puts:
        lodsb
        test    %al, %al
        jz      1f
        call    putc
        jmp     puts
1:      ret

/* putdec(%eax): unsigned decimal. */
putdec:
        mov     $10, %ecx
        xor     %r8d, %r8d
1:      xor     %edx, %edx
        div     %ecx
        push    %rdx
        inc     %r8d
        test    %eax, %eax
        jnz     1b
2:      pop     %rax
        add     $'0', %al
        call    putc
        dec     %r8d
        jnz     2b
        ret


        .data
msg_hello:      .asciz "tiny guest: hello\n"
msg_imr_ok:     .asciz "pic mask reads back: yes\n"
msg_imr_bad:    .asciz "pic mask reads back: no\n"
msg_pit:        .asciz "pit interrupts: "
msg_count:      .asciz "\npit count just after a tick is high: "
msg_yes:        .asciz "yes\n"
msg_no:         .asciz "no\n"
msg_apic:       .asciz "lapic timer interrupts: "
msg_hpet:       .asciz "hpet counter advanced: "
msg_done:       .asciz "tiny guest: done\n"
msg_exc:        .asciz "exception "
msg_nl:         .asciz "\n"
        .balign 4
pit_ticks:      .long 0
apic_ticks:     .long 0
        .balign 16
idtr:   .word   256 * 16 - 1
        .quad   idt
        .balign 16
idt:    .fill   256 * 16, 1, 0
