(function(){
var q=document.getElementById('q'),mode=document.getElementById('mode'),count=document.getElementById('count'),
root=document.documentElement,errBox=document.getElementById('errors');
function low(el){return el?el.textContent.toLowerCase():''}
var vids=[].map.call(document.querySelectorAll('section.video'),function(v){var p=(v.getAttribute('data-path')||'').toLowerCase();
return{el:v,vars:v.querySelectorAll('.variant'),
clips:[].map.call(v.querySelectorAll('.clip'),function(c){return{el:c,t:p+'\n'+low(c.querySelector('.desc')),
seg:v.querySelector('.seg[href="#'+c.id+'"]')}}),
errs:[].map.call(v.querySelectorAll('.err'),function(e){return{el:e,t:p+'\n'+low(e)}})}});
var rows=[].map.call(document.querySelectorAll('tr.errrow'),function(r){return{el:r,t:low(r)}});
var total=0;vids.forEach(function(v){total+=v.clips.length});
function match(t,terms){for(var i=0;i<terms.length;i++){if(t.indexOf(terms[i])<0)return false}return true}
function apply(){var terms=q.value.toLowerCase().split(/\s+/).filter(Boolean),m=mode.value,nv=0,nc=0,ne=0,nr=0;
vids.forEach(function(v){var any=false;
v.clips.forEach(function(c){var s=m!=='errors'&&match(c.t,terms);c.el.hidden=!s;if(c.seg)c.seg.classList.toggle('off',!s);
if(s){nc++;any=true}});
v.errs.forEach(function(e){var s=m!=='ok'&&match(e.t,terms);e.el.hidden=!s;if(s){ne++;any=true}});
[].forEach.call(v.vars,function(b){b.hidden=!b.querySelector('.clip:not([hidden])')});
v.el.hidden=!any;if(any)nv++});
rows.forEach(function(r){var s=m!=='ok'&&match(r.t,terms);r.el.hidden=!s;if(s)nr++});
if(errBox)errBox.hidden=!nr;
count.textContent=nv+' video'+(nv===1?'':'s')+' · '+nc+' of '+total+' clips · '+ne+' error'+(ne===1?'':'s')+' shown';
root.setAttribute('data-visible-videos',nv);root.setAttribute('data-visible-clips',nc);
root.setAttribute('data-visible-errors',ne);if(window.__reveal)window.__reveal()}
var timer;q.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,60)});
mode.addEventListener('change',apply);
document.addEventListener('keydown',function(e){if(e.key==='/'&&document.activeElement!==q){e.preventDefault();q.focus()}});
function info(seg){var box=seg.parentNode.nextElementSibling;if(box)box.textContent=seg.title}
document.addEventListener('mouseover',function(e){var s=e.target.closest&&e.target.closest('.seg');if(s)info(s)});
document.addEventListener('click',function(e){var s=e.target.closest&&e.target.closest('.seg');if(!s)return;
[].forEach.call(s.parentNode.children,function(x){x.classList.toggle('sel',x===s)});info(s)});
window.__selftest=function(p){q.value=p.selftest||'';mode.value=p.mode||'all';apply()};
apply();
})();
